"""Smoke tests of benchmarks/data_pipeline.py: clip writing, decode/render rates, tokenization and
read accounting with fake tokenizers, and `main` end to end, so the script does not rot silently
when the pipeline it times changes.

Figures: a benchmark module's `time` is replaced by a scripted clock (tests/fake_clocks.py:
`ScriptedClock` returns start/end pairs of given intervals; `ManualClock` moves only when a fake
says so), so every rate, best-of, median, FLOP/s and MFU figure, returned and printed, must equal
the one worked out by hand from those intervals. bench_render, lm_step_seconds and `main` run on the
real clock (positive, finite, printed = returned). Slow (left out of the default run):
lm_step_seconds (~8 s: a prefix LM trainer compile) and `main` (~12 s; its other parts are tested
one by one; tests/test_data_tokenize.py runs it with --skip_lm).
"""
import math
import os

import numpy as np
import pytest

from fake_clocks import ManualClock, ScriptedClock, printed_floats
from tests.helpers import load_benchmark
from tokenize_fakes import FakeAudio, FakeText


# -- data_pipeline.py ------------------------------------------------------------------------------
dp = load_benchmark("data_pipeline")


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory):
  return dp.make_videos(str(tmp_path_factory.mktemp("mp4s")), 2)


def test_make_videos_writes_readable_clips(mp4s):
  from vp_jax.io import video as video_io
  assert [os.path.basename(p) for p in mp4s] == ["v0.mp4", "v1.mp4"]
  frames, times, audio = video_io.read_video(mp4s[1])
  assert frames.shape == (75, 240, 320, 3) and frames.dtype == np.uint8
  assert np.allclose(np.diff(times), 1 / 30, atol=1e-3)
  # Frame 10 of video 1: the moving gradients + noise in [0, 8) the script draws (H.264, crf 18).
  yy, xx = np.mgrid[0:240, 0:320]
  want = np.stack([(xx + 40 + 30) % 256, (yy + 20) % 256, (xx + yy) // 3 % 256], -1) + 3.5
  assert np.abs(frames[10].astype(float) - want).mean() < 8
  # 2.5 s of a 0.3-amplitude 440 Hz tone (AAC: a frame of padding at most).
  assert abs(audio.size - 40_000) <= 2048
  assert np.sqrt(np.mean(audio[4000:36000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_decode_and_render_rates(monkeypatch, mp4s):
  assert 0 < dp.bench_render("32x32", 1) < math.inf                 # real clock
  monkeypatch.setattr(dp, "time", ScriptedClock([0.5, 0.25, 0.75]))
  assert dp.bench_decode(mp4s, (32, 32)) == 2 / 0.5     # one 17-frame 8 fps clip per 2.5 s file
  assert dp.bench_decode(mp4s, (128, 128)) == 2 / 0.25
  assert dp.bench_render("32x32", 3) == 3 / 0.75
  assert dp.time.done


class _Costly:
  """Forwards encode / commit_condition to `inner`; each call advances `clock` by `seconds`."""

  def __init__(self, inner, clock, seconds):
    self.inner, self.clock, self.seconds, self.calls = inner, clock, seconds, 0

  def _call(self, fn, *args):
    self.calls += 1
    if self.clock is not None:
      self.clock.advance(self.seconds)
    return fn(*args)

  def encode(self, *args):
    return self._call(self.inner.encode, *args)

  def commit_condition(self, *args):
    return self._call(self.inner.commit_condition, *args)


class _FakeVideo:
  """MAGVIT double: all-zero ids of MAGVIT's latent shape (1 + (T - 1) / 4, H / 8, W / 8)."""

  def encode(self, frames):
    b, t, h, w, _ = np.shape(frames)
    return np.zeros((b, 1 + (t - 1) // 4, h // 8, w // 8), np.int32)

  def commit_condition(self, frames, visible):
    assert np.shape(visible) == np.shape(frames)[:4]
    return self.encode(frames) + 1


def _fake_tokenizers(clock=None):
  from vp_jax.data.tokenize import Tokenizers
  return Tokenizers(video=_Costly(_FakeVideo(), clock, 0.25),
                    audio=_Costly(FakeAudio(), clock, 0.5), text=_Costly(FakeText(), clock, 0.125))


def test_bench_tokenize_and_read_accounting(monkeypatch, tmp_path):
  from vp_jax.data.synthetic import SyntheticConfig
  from vp_jax.data.tokenized import load_manifest
  clock = ManualClock()
  monkeypatch.setattr(dp, "time", clock)
  tok = _fake_tokenizers(clock)
  out = str(tmp_path / "tok")
  r = dp.bench_tokenize(tok, 3, out, config=SyntheticConfig(resolution=(16, 16), num_frames=5),
                        batch=2)
  # 3 clips in 2 batches of 2; per batch 5 video calls (clip, first frame, stylization, 2 COMMIT
  # conditions), 1 audio, 1 text call; nothing else moves this clock.
  assert (tok.video.calls, tok.audio.calls, tok.text.calls) == (10, 2, 2)
  assert r["video_s"] == 10 * 0.25 and r["audio_s"] == 2 * 0.5 and r["text_s"] == 2 * 0.125
  assert r["seconds"] == 2.5 + 1.0 + 0.25 and r["clips_per_s"] == 3 / 3.75
  manifest = load_manifest(out)
  assert manifest["num_examples"] == 3
  assert manifest["shapes"]["video_tokens"] == [2, 2, 2]
  # Read back 4 times over; the first record (graph construction) is not timed.
  monkeypatch.setattr(dp, "time", ScriptedClock([0.5]))
  assert dp.bench_read(out, repeats=4) == (3 * 4 - 1) / 0.5


@pytest.mark.slow  # ~7-9 s: compiles the prefix LM trainer (the file's default run keeps to ~40 s)
def test_lm_step_seconds():
  step_s = dp.lm_step_seconds("tiny", batch=8, seq_len=16, steps=1, text_dim=8)
  assert 0 < step_s < 30


@pytest.mark.slow  # ~12 s alone: the parts above on the real clock + the prefix LM trainer compile
def test_data_pipeline_main_end_to_end(capsys):
  out = dp.main(["--clips", "2", "--tokenize_batch", "2", "--lm_preset", "tiny", "--batch", "8",
                 "--seq_lens", "16", "--lm_steps", "1"], tokenizers=_fake_tokenizers())
  printed = capsys.readouterr().out
  keys = ["decode_128", "decode_32", "render_32", "render_128", "tokenize_32", "read_32"]
  assert all(0 < out[k] < math.inf for k in keys)
  rows = printed_floats(r"^  \S.*\s(\d+\.\d\d)$", printed)
  assert rows == [pytest.approx(out[k], abs=0.0051) for k in keys]
  (total, video_s, audio_s, text_s) = printed_floats(
      r"tokenization of 2 clips: ([\d.]+) s, of which MAGVIT ([\d.]+) s, SoundStream ([\d.]+) s, "
      r"T5 ([\d.]+) s", printed)
  assert total == pytest.approx(2 / out["tokenize_32"], abs=0.051)
  assert video_s == pytest.approx(out["tokenize_video_s"], abs=0.051)
  step_s = out["lm_step_s_16"]
  assert 0 < step_s < 30 and out["lm_clips_per_s_16"] == pytest.approx(8 / step_s)
  (ms, clips) = printed_floats(
      r"batch 8 x 16 tokens\): ([\d.]+) ms/step -> consumes ([\d.]+) clips/s", printed)
  assert ms == pytest.approx(step_s * 1000, abs=0.51)
  assert clips == pytest.approx(8 / step_s, abs=0.051)
