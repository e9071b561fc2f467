"""The demo's stages (vp_jax/demo/run.py) and its generation stage (vp_jax/demo/samples.py) called
one at a time, cheaply: `stage_data` for real (two synthetic clips written and read back),
`register_demo_tasks` on hand-written manifests (task names, rates, layout lengths), `stage_report`
on hand-written summaries, and the training, tokenization and sampling stages with their expensive
callee replaced by a recorder, so what is checked is the wiring: the arguments each stage passes
(step counts, learning rates, warmup, optimizer groups, directories, the image stage's 2D model, the
inflation source) and the summary it builds from the results. `generate_all` runs for real around a
fake generator that returns known clips, so its quality figures are known. tests/test_demo.py runs
every stage for real, end to end (minutes); the real training stages are not repeated here."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
from flax import nnx
from PIL import Image

from vp_jax.data.mixing import schedule_for
from vp_jax.data.synthetic.dataset import SyntheticVideos, flat_labels
from vp_jax.demo import media
from vp_jax.demo import report as report_lib
from vp_jax.demo import run as run_lib
from vp_jax.demo import samples
from vp_jax.demo.config import preset
from vp_jax.generate.pipeline import DataShapes, Generation, Generator
from vp_jax.io.video import read_frames
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import TrainerConfig, TrainResult

CFG = preset("test")     # 16 train / 2 validation 17x32x32 clips, 8 images, 1 sample per task


def _result(losses):
  return TrainResult(state=None, losses=losses, eval_metrics={}, start_step=0)


def _trainer(steps, lr, warmup, log_every, groups):
  opt = OptimizerConfig(learning_rate=lr, warmup_steps=warmup, schedule="cosine",
                        end_learning_rate_ratio=0.1, clip_norm=1.0)
  return TrainerConfig(train_steps=steps, seed=0, log_every=log_every, save_every=steps,
                       eval_every=0, optimizers={g: opt for g in groups})


def _write_manifests(workdir):
  """What the tokenize stage leaves for the demo config: 5x4x4 video latents with 4 x 106 audio
  tokens, 1x4x4 image latents, 64 x 128 text embeddings, in train and validation."""
  for name, video_tokens in (("videos", [5, 4, 4]), ("images", [1, 4, 4])):
    for split in ("train", "validation"):
      d = os.path.join(workdir, "tokenize", name, split)
      os.makedirs(d)
      shapes = {"video_tokens": video_tokens, "text_embeddings": [64, 128], "text_mask": [64]}
      features = ["text_embeddings", "text_mask", "video_tokens"]
      if name == "videos":
        shapes["audio_tokens"] = [4, 106]
        features += ["audio_tokens", "has_audio"]
      with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"format_version": 1, "shapes": shapes, "features": features,
                   "num_with_audio": 2 if name == "videos" else 0}, f)


# -- data ------------------------------------------------------------------------------------------
def test_stage_data_writes_the_validation_clips_and_describes_the_data(tmp_path):
  cfg = preset("test", num_samples=5, display_scale=2)    # 5 asked, the split has 2
  d = str(tmp_path)
  summary = run_lib.stage_data(cfg, d, {})
  assert summary["videos"] == {"resolution": [32, 32], "num_frames": 17, "train": 16,
                               "seed": cfg.videos.seed}
  assert summary["images"] == {"resolution": [32, 32], "num_frames": 1, "train": 8,
                               "seed": cfg.images.seed}
  data = SyntheticVideos(cfg.videos, "validation")
  assert len(summary["examples"]) == len(data) == 2
  for i, example in enumerate(summary["examples"]):
    real = data[i]
    assert example["caption"] == real["caption"]
    base = os.path.join(d, f"real_{i}")
    assert example["files"] == [base + ".mp4", base + ".gif", base + ".wav"]
    frames, _ = read_frames(base + ".mp4")
    assert frames.shape == (17, 64, 64, 3)                # upscaled 2x
    big = media.upscale(real["frames"], 2).astype(np.float64)
    assert np.abs(frames - big).mean() < 6.0               # H.264 at crf 18
    wave, rate = soundfile.read(base + ".wav", dtype="float32")
    assert rate == 16000 and wave.shape == real["audio"].shape
    np.testing.assert_allclose(wave, np.clip(real["audio"], -1, 1), atol=1.0 / 32767)
    assert Image.open(base + ".gif").n_frames == 17


# -- tasks -----------------------------------------------------------------------------------------
def test_register_demo_tasks_names_rates_and_lengths(tmp_path):
  _write_manifests(str(tmp_path))
  reg, rates = run_lib.register_demo_tasks(CFG, str(tmp_path))
  fmt = "128x128_17"
  # The demo mixture's kinds, one task each: the rate of the kind.
  assert rates == pytest.approx({f"demo_videos_text_to_video_{fmt}": 0.3,
                                 f"demo_videos_image_to_video_{fmt}": 0.2,
                                 f"demo_videos_future_prediction_{fmt}": 0.15,
                                 f"demo_videos_video_to_audio_{fmt}": 0.25,
                                 "demo_images_text_to_image": 0.1})
  assert schedule_for("demo_mixture").stages[0].rates == rates
  assert schedule_for("demo_mixture").stages[0].start_fraction == 0.0
  assert reg.datasets["images"].tasks == {"text_to_image": ["demo_images_text_to_image"]}
  assert reg.datasets["videos"].skipped["inpainting"] == "needs commit_inpaint_central_tokens"
  # (sequence, prefix, output) lengths: 64 text slots, 4x4 latents, 5 latent frames, 106 x 4 audio.
  lengths = {name: (lay.length, lay.prefix_length, lay.output_length)
             for r in reg.datasets.values() for name, lay in r.layouts.items()}
  assert lengths[f"demo_videos_text_to_video_{fmt}"] == (152, 70, 5 * 16 + 2)
  assert lengths[f"demo_videos_image_to_video_{fmt}"] == (154, 88, 4 * 16 + 2)
  assert lengths[f"demo_videos_video_to_audio_{fmt}"] == (577, 151, 4 * 106 + 2)
  assert lengths["demo_images_text_to_image"] == (86, 70, 16)
  # A mixture kind no dataset provides is refused.
  with pytest.raises(ValueError, match="demo mixture: no registered task of kind 'inpainting'"):
    run_lib.register_demo_tasks(preset("test", mixture=(("inpainting", 1.0),)), str(tmp_path))


# -- the training and tokenization stages, wiring only ---------------------------------------------
def test_stage_video_tok_pretrains_2d_then_trains_the_inflated_model(tmp_path, monkeypatch):
  from vp_jax.models.magvit import train as magvit_train
  calls = []

  def fake_train(**kw):
    calls.append(kw)
    return _result({1: 2.0, 25: 1.5, 50: 0.75} if len(calls) == 1 else {5: 0.5})

  monkeypatch.setattr(magvit_train, "train_video_tokenizer", fake_train)
  monkeypatch.setattr(report_lib, "video_tokenizer_quality",
                      lambda video_dir, cfg: {"dir": video_dir, "psnr_db": 21.5})
  cfg = preset("test", image_steps=50, video_steps=5)
  d = str(tmp_path)
  summary = run_lib.stage_video_tok(cfg, d, {})
  groups = ("generator", "discriminator")
  image, video = calls
  assert image == dict(model_dir=os.path.join(d, "image"),
                       model=dataclasses.replace(cfg.video_tokenizer, temporal_kernel=1),
                       batch_size=8, dataset=cfg.images,
                       trainer=_trainer(50, 2e-3, warmup=5, log_every=5, groups=groups))
  assert video == dict(model_dir=os.path.join(d, "video"), model=cfg.video_tokenizer,
                       batch_size=8, init_from=os.path.join(d, "image"), dataset=cfg.videos,
                       trainer=_trainer(5, 5e-4, warmup=0, log_every=1, groups=groups))
  assert summary == {
      "image_pretraining": {"first_step": 1, "first_loss": 2.0, "last_step": 50,
                            "last_loss": 0.75},
      "video_training": {"first_step": 5, "first_loss": 0.5, "last_step": 5, "last_loss": 0.5},
      "heldout": {"dir": os.path.join(d, "video"), "psnr_db": 21.5}}


def test_stage_audio_tok_trains_on_the_soundtracks(tmp_path, monkeypatch):
  from vp_jax.models.soundstream import train as soundstream_train
  calls = []

  def fake_train(**kw):
    calls.append(kw)
    return _result({})            # e.g. nothing left to train after a resume

  monkeypatch.setattr(soundstream_train, "train", fake_train)
  monkeypatch.setattr(report_lib, "audio_tokenizer_quality", lambda d, cfg: {"snr_db": 3.0})
  d = str(tmp_path)
  summary = run_lib.stage_audio_tok(CFG, d, {})
  assert calls == [dict(model_dir=d, model=CFG.audio_tokenizer, batch_size=8, clip_samples=3200,
                        dataset=CFG.videos,
                        trainer=_trainer(2, 2e-3, warmup=0, log_every=1,
                                         groups=("generator", "discriminator")))]
  assert summary == {"training": {}, "heldout": {"snr_db": 3.0}}


def test_stage_tokenize_runs_both_datasets_and_splits(tmp_path, monkeypatch):
  from vp_jax.data import tokenize as tokenize_lib
  calls = []

  def fake_tokenize(source, tok, out_dir, tcfg):
    calls.append((source.config, source.split, len(source), tok, out_dir, tcfg))
    return {"num_examples": len(source), "shapes": {"video_tokens": [5, 4, 4]},
            "run_seconds": 0.5}

  monkeypatch.setattr(tokenize_lib, "tokenize_dataset", fake_tokenize)
  tokenizers = object()
  d = str(tmp_path)
  summary = run_lib.stage_tokenize(CFG, d, {"tokenizers": tokenizers})
  tcfg = tokenize_lib.TokenizeConfig(masks=(), stylization=False, batch_size=8, shard_size=64)
  assert calls == [(CFG.videos, "train", 16, tokenizers, os.path.join(d, "videos", "train"), tcfg),
                   (CFG.videos, "validation", 2, tokenizers,
                    os.path.join(d, "videos", "validation"), tcfg),
                   (CFG.images, "train", 8, tokenizers, os.path.join(d, "images", "train"), tcfg),
                   (CFG.images, "validation", 1, tokenizers,
                    os.path.join(d, "images", "validation"), tcfg)]
  shapes = {"video_tokens": [5, 4, 4]}
  assert summary == {
      "videos/train": {"examples": 16, "shapes": shapes, "seconds": 0.5},
      "videos/validation": {"examples": 2, "shapes": shapes, "seconds": 0.5},
      "images/train": {"examples": 8, "shapes": shapes, "seconds": 0.5},
      "images/validation": {"examples": 1, "shapes": shapes, "seconds": 0.5}}


def test_stage_lm_trains_on_the_registered_demo_mixture(tmp_path, monkeypatch):
  from vp_jax.train import run_lm
  calls = []

  def fake_train_lm(**kw):
    calls.append(kw)
    return _result({1: 6.0, 3: 4.25})

  monkeypatch.setattr(run_lm, "train_lm", fake_train_lm)
  workdir = str(tmp_path)
  _write_manifests(workdir)
  d = os.path.join(workdir, "lm")
  summary = run_lib.stage_lm(CFG, d, {"workdir": workdir})
  assert calls == [dict(model_dir=d, model=CFG.lm, mixture_or_task_name="demo_mixture",
                        batch_size=8, task_modules=(),
                        trainer=_trainer(3, 2e-3, warmup=0, log_every=1, groups=("model",)))]
  assert summary["training"] == {"first_step": 1, "first_loss": 6.0, "last_step": 3,
                                 "last_loss": 4.25}
  assert summary["mixture"] == schedule_for("demo_mixture").stages[0].rates
  assert sum(summary["mixture"].values()) == pytest.approx(1.0)


# -- generation ------------------------------------------------------------------------------------
class FakeLM(nnx.Module):
  """Enough of a PrefixLM for Generator / Sampler construction: its config and one parameter."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.w = nnx.Param(jnp.ones((2,)))


def test_build_generator_loads_the_lm_and_the_data_shapes(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  _write_manifests(workdir)
  loaded = []

  def fake_load(model_dir, cfg, mesh, rules):
    loaded.append((model_dir, cfg, dict(mesh.shape)))
    return FakeLM(cfg), 7

  monkeypatch.setattr(samples, "load_prefix_lm", fake_load)
  tok = Tokenizers()
  gen, step = samples.build_generator(CFG, workdir, tok)
  assert step == 7
  assert loaded[0][:2] == (os.path.join(workdir, "lm"), CFG.lm)
  assert np.prod(list(loaded[0][2].values())) == jax.device_count()   # all devices
  assert isinstance(gen, Generator)
  assert gen.shapes == DataShapes(latent_hw=(4, 4), resolution="128x128", num_frames=17,
                                  text_length=64, num_audio_frames=106)
  assert (gen.video, gen.audio, gen.text) == (tok.video, tok.audio, tok.text)
  assert gen.vocab == CFG.lm.vocab
  assert gen.layout("text_to_video", with_text=True).output_length == 5 * 16 + 2


class VideoTok:
  """encode: the uint8 clips themselves; decode: them in [0, 1] (a perfect tokenizer)."""

  def encode(self, frames):
    return np.asarray(frames)

  def decode(self, ids):
    return ids.astype(np.float32) / 255.0


@dataclasses.dataclass
class Tokenizers:
  video: object = dataclasses.field(default_factory=VideoTok)
  audio: object = "audio tokenizer"
  text: object = "text encoder"


class FakeGenerator:
  """Records the calls; text_to_video returns the validation clips in reverse order, the other
  video tasks the clips themselves, video_to_audio a 440 Hz tone. Layouts are the real ones."""

  def __init__(self, cfg, frames):
    self.vocab, self.frames, self.calls = cfg.lm.vocab, frames, []
    self.shapes = DataShapes(latent_hw=(4, 4), text_length=64, num_audio_frames=106)

  def layout(self, task, **kw):
    return Generator.layout(self, task, **kw)

  def generate(self, task, key, *, prompts=None, video=None, context_frames=None, sampling=None):
    self.calls.append(dict(task=task, key=jax.random.key_data(key), prompts=prompts, video=video,
                           context_frames=context_frames, sampling=sampling))
    b = len(prompts)
    if task == "video_to_audio":
      tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(34000) / 16000).astype(np.float32)
      return Generation(task, None, {}, audio=np.stack([tone] * b))
    clips = self.frames[::-1] if task == "text_to_video" else self.frames
    return Generation(task, None, {}, video=clips[:b].astype(np.float32) / 255.0)


def test_generate_all_conditions_media_layouts_and_quality(tmp_path, monkeypatch):
  data = SyntheticVideos(CFG.videos, "validation")
  examples = [data[i] for i in range(2)]                    # quality_samples=2, the whole split
  frames = np.stack([e["frames"] for e in examples])
  captions = [e["caption"] for e in examples]
  labels = [flat_labels(e["labels"]) for e in examples]
  # The two clips differ in colour and direction, not in shape.
  assert [(x["colour"], x["shape"] == labels[0]["shape"], x["direction"]) for x in labels] == [
      ("orange", True, "left"), ("red", True, "right")]
  fake = FakeGenerator(CFG, frames)
  tok = Tokenizers()
  monkeypatch.setattr(samples, "build_generator", lambda cfg, workdir, t: (fake, 3))
  out = str(tmp_path)
  summary = samples.generate_all(CFG, "unused-workdir", out, tok)
  # The conditions: all prompts for text-to-video, num_samples=1 of them for the others.
  keys = [jax.random.key_data(k) for k in jax.random.split(jax.random.key(CFG.seed), 4)]
  tasks = ["text_to_video", "image_to_video", "future_prediction", "video_to_audio"]
  assert [c["task"] for c in fake.calls] == tasks
  for call, key in zip(fake.calls, keys):
    np.testing.assert_array_equal(call["key"], key)
    assert call["sampling"] == CFG.sampling
  assert fake.calls[0]["prompts"] == captions and fake.calls[0]["video"] is None
  for call in fake.calls[1:]:
    assert call["prompts"] == captions[:1]
  np.testing.assert_array_equal(fake.calls[1]["video"], frames[:1, :1])    # the first frame
  np.testing.assert_array_equal(fake.calls[2]["video"], frames[:1])
  assert fake.calls[2]["context_frames"] == 2 and fake.calls[1]["context_frames"] is None
  np.testing.assert_array_equal(fake.calls[3]["video"], frames[:1])
  # Media and layouts.
  assert summary["lm_step"] == 3
  want = {"text_to_video": (152, 70, 82), "image_to_video": (154, 88, 66),
          "future_prediction": (154, 104, 3 * 16 + 2), "video_to_audio": (577, 151, 426)}
  assert list(summary["tasks"]) == tasks
  for task, info in summary["tasks"].items():
    assert (info["sequence_length"], info["prefix_length"], info["output_tokens"]) == want[task]
    assert info["prompts"] == captions[:1]
    base = os.path.join(out, f"{task}_0")
    extra = [base + ".wav"] if task == "video_to_audio" else []
    assert info["files"] == [base + ".mp4", base + ".gif"] + extra
  # text_to_video wrote the second clip (reversed order), video_to_audio the real first one.
  t2v, _ = read_frames(os.path.join(out, "text_to_video_0.mp4"))
  v2a, _ = read_frames(os.path.join(out, "video_to_audio_0.mp4"))
  assert np.abs(t2v - frames[1].astype(np.float64)).mean() < 6.0
  assert np.abs(v2a - frames[0].astype(np.float64)).mean() < 6.0
  assert summary["contact_sheet"] == os.path.join(out, "contact_sheet.png")
  assert Image.open(summary["contact_sheet"]).size == (media.LABEL_WIDTH + 17 * 34, 5 * 34)
  # Quality: the tokenizer is perfect, so it scores as the real clips; text-to-video gave each
  # prompt the other clip, which is what the chance baseline compares with (2 clips: the other one).
  q = summary["quality"]
  assert q["num_prompts"] == 2
  real = {"colour": 1.0, "shape": 1.0, "direction": 1.0, "all_three": 1.0}
  other = {"colour": 0.0, "shape": 1.0, "direction": 0.0, "all_three": 0.0}
  assert q["real_clip_of_the_prompt"] == q["tokenizer_reconstruction"] == real
  assert q["generated_text_to_video"] == q["random_other_real_clip"] == other


def test_stage_generate_hands_the_loaded_tokenizers_to_generate_all(tmp_path, monkeypatch):
  calls, loads = [], []
  monkeypatch.setattr(samples, "generate_all",
                      lambda cfg, workdir, out, tok: calls.append((cfg, workdir, out, tok)) or
                      {"tasks": {}})
  monkeypatch.setattr(run_lib, "load_tokenizers", lambda workdir: loads.append(workdir) or "tok")
  ctx = {"workdir": str(tmp_path)}
  d = str(tmp_path / "generate")
  assert run_lib.stage_generate(CFG, d, ctx) == {"tasks": {}}
  assert run_lib.stage_generate(CFG, d, ctx) == {"tasks": {}}
  assert loads == [str(tmp_path)]                          # loaded once, kept in ctx
  assert calls == [(CFG, str(tmp_path), d, "tok")] * 2


# -- report ----------------------------------------------------------------------------------------
def test_stage_report_reads_every_stage_summary(tmp_path, capsys):
  workdir = str(tmp_path)
  losses = {"first_step": 1, "first_loss": 2.0, "last_step": 2, "last_loss": 1.0}
  summaries = {
      "data": {"examples": []},
      "video_tok": {"image_pretraining": losses, "video_training": {},
                    "heldout": {"clips": 2, "psnr_db": 20.0, "psnr_db_min": 18.0,
                                "distinct_codes": 9, "codebook_size": 1024,
                                "tokens_per_clip": 80}},
      "audio_tok": {"training": losses,
                    "heldout": {"clips": 2, "log_mel_distance": 0.5,
                                "log_mel_distance_of_silence": 2.0, "snr_db": 4.0,
                                "tokens_per_clip": 424}},
      "tokenize": {"videos/train": {"examples": 16}},
      "lm": {"training": losses, "mixture": {}},
      "generate": {"tasks": {}, "contact_sheet": os.path.join(workdir, "generate", "c.png"),
                   "quality": {"num_prompts": 2}}}
  for stage, summary in summaries.items():
    os.makedirs(os.path.join(workdir, stage))
    with open(os.path.join(workdir, stage, "summary.json"), "w") as f:
      json.dump(summary, f)
  d = os.path.join(workdir, "report")
  os.makedirs(d)
  wall = {"data": 1.0, "lm": 2.5}
  out = run_lib.stage_report(CFG, d, {"workdir": workdir, "wall": wall})
  assert out == {"stages": summaries, "wall_seconds": wall, "total_wall_seconds": 3.5}
  assert json.load(open(os.path.join(workdir, "report.json"))) == out   # in workdir, not d
  md = open(os.path.join(workdir, "report.md")).read()
  assert "| prefix LM | 2 | 2.0000 -> 1.0000 |" in md and "| **total** | **3.5** |" in md
  assert os.listdir(d) == []
  capsys.readouterr()
