"""vp_jax/demo/report.py on its own: the tokenizer quality figures against reconstructions whose
PSNR / SNR are known in closed form (tokenizers replaced by fakes that remember their input), and
report.json / report.md from a hand-made set of stage summaries. tests/test_demo.py runs the same
functions inside the whole demo."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.data.synthetic.dataset import SyntheticVideos
from vp_jax.demo import report
from vp_jax.demo.config import preset
from vp_jax.models.soundstream.spectral import log_mel_distance
from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer

CFG = preset("test", eval_clips=2)   # 2 held-out 17x32x32 clips with 2.125 s soundtracks


class FakeVideoTokenizer:
  """encode: ids [B, 5, 4, 4] cycling through 7 codes; decode: the encoded clip in [0, 1] plus a
  per-clip offset, so clip b's PSNR is -20 log10(offset[b]) exactly."""
  offsets = np.array([0.01, 0.1])    # 40 dB and 20 dB

  def encode(self, frames):
    assert frames.dtype == np.uint8 and frames.shape[1:] == (17, 32, 32, 3)
    self.frames = frames
    return np.arange(frames.shape[0] * 80).reshape(-1, 5, 4, 4) % 7

  def decode(self, ids):
    assert ids.shape[1:] == (5, 4, 4)
    return self.frames / 255.0 + self.offsets[:, None, None, None, None]


class FakeAudioTokenizer:
  """encode: ids [B, 4, 106], level k using k + 1 codes; decode: the encoded wave times `gain`."""

  def __init__(self, gain):
    self.gain = gain

  def encode(self, wave):
    self.wave = wave
    return np.stack([np.arange(106) % (k + 1) for k in range(4)])[None].repeat(len(wave), 0)

  def decode(self, ids, num_samples):
    assert ids.shape[1:] == (4, 106) and num_samples == self.wave.shape[1]
    return self.gain * self.wave


def test_video_tokenizer_quality(monkeypatch):
  loaded = []
  monkeypatch.setattr(VideoTokenizer, "load",
                      lambda workdir: loaded.append(workdir) or FakeVideoTokenizer())
  q = report.video_tokenizer_quality("some/workdir", CFG)
  assert loaded == ["some/workdir"]
  assert q["clips"] == 2 and q["tokens_per_clip"] == 80
  np.testing.assert_allclose([q["psnr_db"], q["psnr_db_min"]], [30.0, 20.0], atol=1e-4)  # float32 target
  assert q["distinct_codes"] == 7 and q["codebook_size"] == 1024


@pytest.mark.parametrize("gain", [0.5, 1.0])
def test_audio_tokenizer_quality(monkeypatch, gain):
  monkeypatch.setattr(AudioTokenizer, "load", lambda workdir: FakeAudioTokenizer(gain))
  q = report.audio_tokenizer_quality("some/workdir", CFG)
  wave = np.stack([SyntheticVideos(CFG.videos, "validation")[i]["audio"] for i in range(2)])
  assert q["clips"] == 2 and q["tokens_per_clip"] == 4 * 106
  assert q["distinct_codes_per_level"] == [1, 2, 3, 4]
  silence = float(np.mean(log_mel_distance(jnp.asarray(wave), jnp.zeros_like(wave))))
  np.testing.assert_allclose(q["log_mel_distance_of_silence"], silence, rtol=1e-6)
  assert silence > 0.1
  if gain == 0.5:
    # 10 log10(|x|^2 / |x/2|^2); mel power x 1/4 moves log10 mel by at most log10(4) (less
    # where the 1e-4 floor dominates: quiet bins).
    np.testing.assert_allclose(q["snr_db"], 20 * np.log10(2.0), atol=1e-3)
    half = float(np.mean(log_mel_distance(jnp.asarray(wave), jnp.asarray(0.5 * wave))))
    np.testing.assert_allclose(q["log_mel_distance"], half, rtol=1e-6)
    assert 0.01 < half < np.log10(4.0)
  else:   # a perfect reconstruction
    assert q["log_mel_distance"] == pytest.approx(0.0, abs=1e-6) and q["snr_db"] > 80


def _summaries(workdir):
  def losses(first, last, steps):
    return {"first_step": 1, "first_loss": first, "last_step": steps, "last_loss": last}

  files = [os.path.join(workdir, "generate", f"text_to_video_{i}.mp4") for i in range(4)]
  return {
      "video_tok": {"image_pretraining": losses(1.0, 0.5, 10), "video_training": {},
                    "heldout": {"clips": 2, "psnr_db": 30.0, "psnr_db_min": 20.0,
                                "tokens_per_clip": 80, "distinct_codes": 7, "codebook_size": 1024}},
      "audio_tok": {"training": losses(2.0, 1.25, 20),
                    "heldout": {"clips": 2, "log_mel_distance": 0.25,
                                "log_mel_distance_of_silence": 2.5, "snr_db": 6.02,
                                "tokens_per_clip": 424}},
      "lm": {"training": losses(5.5, 3.0, 30)},
      "generate": {
          "tasks": {"text_to_video": {"sequence_length": 100, "prefix_length": 18,
                                      "output_tokens": 82, "files": files},
                    "video_to_audio": {"sequence_length": 500, "prefix_length": 74,
                                       "output_tokens": 426, "files": files[:1]}},
          "contact_sheet": os.path.join(workdir, "generate", "contact_sheet.png"),
          "quality": {"num_prompts": 16,
                      "generated_text_to_video": {"colour": 0.5, "shape": 0.25, "direction": 1.0,
                                                  "all_three": 0.75}}}}


def test_write_report(tmp_path, capsys):
  workdir = str(tmp_path)
  wall = {"data": 1.25, "video_tok": 100.0, "audio_tok": 20.5, "lm": 30.0, "generate": 8.0}
  out = report.write_report(workdir, CFG, _summaries(workdir), wall)
  assert out["total_wall_seconds"] == 159.8
  assert json.load(open(tmp_path / "report.json")) == out
  assert out["stages"]["video_tok"]["heldout"]["psnr_db"] == 30.0
  md = open(tmp_path / "report.md").read()
  assert md == capsys.readouterr().out
  lines = md.splitlines()
  assert lines[0] == "# vp_jax demo report"
  assert "Data: synthetic 32x32 clips of 17 frames (16 train) and 8 still images." in lines
  for line in ["| video_tok | 100.0 |", "| **total** | **159.8** |",
               "| video tokenizer, images | 10 | 1.0000 -> 0.5000 |",
               "| audio tokenizer | 20 | 2.0000 -> 1.2500 |",
               "| prefix LM | 30 | 5.5000 -> 3.0000 |",
               "| text_to_video | 100 | 18 | 82 | generate/text_to_video_0.mp4, "
               "generate/text_to_video_1.mp4, generate/text_to_video_2.mp4 ... |",
               "| video_to_audio | 500 | 74 | 426 | generate/text_to_video_0.mp4 |",
               "Contact sheet: generate/contact_sheet.png",
               "## Quality (text-to-video, 16 held-out prompts)",
               "| generated text to video | 50% | 25% | 100% | 75% |"]:
    assert line in lines, line
  assert not any("clips (inflated)" in line for line in lines)   # a stage without losses
  assert ("Video tokenizer on 2 held-out clips: PSNR 30.00 dB (min 20.00), 7 of 1024 codes used, "
          "80 tokens per clip.") in lines
  assert ("Audio tokenizer on 2 held-out soundtracks: log-mel distance 0.250 (silence scores "
          "2.500), SNR 6.02 dB, 424 tokens per clip.") in lines
