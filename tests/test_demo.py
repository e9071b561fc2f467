"""The end-to-end demo at tiny sizes: every stage runs through the real components, the media files
decode, the report holds the figures, and a second run reuses what was trained."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from vp_jax.demo import media
from vp_jax.demo import run as run_lib
from vp_jax.demo.config import preset
from vp_jax.demo.report import psnr_db
from vp_jax.demo.run import STAGES, run_demo
from vp_jax.io.video import probe, read_frames


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  run_demo(workdir, preset("test"))
  return workdir


def _summary(workdir, stage):
  with open(os.path.join(workdir, stage, "summary.json")) as f:
    return json.load(f)


def test_demo_writes_decodable_media_and_a_report(demo_dir):
  gen = _summary(demo_dir, "generate")
  assert set(gen["tasks"]) == {"text_to_video", "image_to_video", "future_prediction",
                               "video_to_audio"}
  for task, info in gen["tasks"].items():
    mp4 = [f for f in info["files"] if f.endswith(".mp4")]
    assert len(mp4) == 1 and os.path.exists(mp4[0].replace(".mp4", ".gif"))
    frames, _ = read_frames(mp4[0])
    assert frames.shape == (17, 32, 32, 3), task
    assert probe(mp4[0]).has_audio == (task == "video_to_audio"), task
  # Sequence lengths of the demo's layouts: 4x4 latents, 64 text slots, 106 audio frames.
  assert gen["tasks"]["text_to_video"]["output_tokens"] == 5 * 16 + 2
  assert gen["tasks"]["video_to_audio"]["output_tokens"] == 4 * 106 + 2
  assert gen["tasks"]["image_to_video"]["output_tokens"] == 4 * 16 + 2
  assert gen["tasks"]["future_prediction"]["output_tokens"] == 3 * 16 + 2
  sheet = Image.open(gen["contact_sheet"])
  assert sheet.size == (media.LABEL_WIDTH + 17 * 34, 5 * 34)   # 4 tasks + 1 real clip, 1 each
  q = gen["quality"]
  for name in ("generated_text_to_video", "real_clip_of_the_prompt", "tokenizer_reconstruction",
               "random_other_real_clip"):
    assert set(q[name]) == {"colour", "shape", "direction", "all_three"}
    assert all(0.0 <= v <= 1.0 for v in q[name].values())
  # The detector reads the real clips' own labels (the ceiling of the quality figure).
  assert q["real_clip_of_the_prompt"]["colour"] == 1.0

  report = json.load(open(os.path.join(demo_dir, "report.json")))
  assert set(report["wall_seconds"]) == set(STAGES[:-1])
  vt = report["stages"]["video_tok"]
  assert vt["video_training"]["last_step"] == 2 and np.isfinite(vt["heldout"]["psnr_db"])
  assert vt["heldout"]["tokens_per_clip"] == 5 * 4 * 4
  assert report["stages"]["audio_tok"]["heldout"]["tokens_per_clip"] == 4 * 106
  assert report["stages"]["lm"]["training"]["last_step"] == 3
  text = open(os.path.join(demo_dir, "report.md")).read()
  assert "PSNR" in text and "all three" in text


def test_demo_rerun_reuses_every_stage(demo_dir, capsys):
  before = {s: os.path.getmtime(os.path.join(demo_dir, s, "summary.json")) for s in STAGES[:-1]}
  run_demo(demo_dir, preset("test"))
  out = capsys.readouterr().out
  for stage in STAGES[:-1]:
    assert f"{stage}: done before" in out
    assert os.path.getmtime(os.path.join(demo_dir, stage, "summary.json")) == before[stage]
  assert os.path.exists(os.path.join(demo_dir, "report.md"))


def test_force_reruns_a_stage_and_every_later_one(tmp_path, monkeypatch):
  """The orchestration alone (stages replaced by recorders): what runs, what is kept, and that an
  interrupted stage (no summary) runs again."""
  calls = []

  def fake(name):
    def stage(cfg, d, ctx):
      calls.append(name)
      with open(os.path.join(d, "marker"), "w") as f:
        f.write(name)
      return {"stage": name}
    return stage

  monkeypatch.setattr(run_lib, "STAGE_FNS", {s: fake(s) for s in STAGES})
  workdir = str(tmp_path)
  run_demo(workdir, preset("test"))
  assert calls == list(STAGES)
  calls.clear()
  run_demo(workdir, preset("test"), force=("tokenize",))
  assert calls == ["tokenize", "lm", "generate", "report"]
  calls.clear()
  os.remove(os.path.join(workdir, "lm", "summary.json"))     # as if the LM stage was killed
  run_demo(workdir, preset("test"))
  assert calls == ["lm", "report"]
  wall = json.load(open(os.path.join(workdir, "wall_seconds.json")))
  assert set(wall) == set(STAGES[:-1])
  calls.clear()
  run_demo(workdir, preset("test"), force=("all",))
  assert calls == list(STAGES)


def test_demo_config_rejects_mismatched_codebooks_and_unknown_stages(tmp_path):
  with pytest.raises(ValueError, match="2\\^12 codes"):
    preset("test", video_tokenizer=preset("test").video_tokenizer.__class__(embedding_dim=12))
  with pytest.raises(ValueError, match="unknown stages"):
    run_demo(str(tmp_path), preset("test"), force=("tokenizer",))
  with pytest.raises(ValueError, match="Unknown demo preset"):
    preset("huge")


def test_psnr_db_and_contact_sheet(tmp_path):
  x = np.zeros((2, 4, 4, 3))
  y = x.copy()
  y[0] += 0.1                      # mse 0.01 -> 20 dB
  y[1, 0, 0, 0] = 1.0              # mse 1/48 -> 10 log10(48)
  np.testing.assert_allclose(psnr_db(y, x), [20.0, 10 * np.log10(48.0)], rtol=1e-9)
  clip = np.zeros((3, 4, 6, 3), np.uint8)
  clip[1] = 255
  path = media.contact_sheet(str(tmp_path / "s.png"), [("a", clip), ("b", clip[:2] * 0.5 / 255)],
                             scale=2)
  img = np.asarray(Image.open(path))
  assert img.shape == (2 * 10, media.LABEL_WIDTH + 3 * 14, 3)
  x0 = media.LABEL_WIDTH + 14      # the second frame of the first row: white
  assert (img[0:8, x0:x0 + 12] == 255).all()
  assert (img[10:18, media.LABEL_WIDTH:media.LABEL_WIDTH + 12] == 0).all()
  assert media.upscale(clip, 3).shape == (3, 12, 18, 3)
