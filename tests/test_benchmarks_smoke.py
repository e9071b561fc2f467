"""Smoke tests of the benchmark scripts (benchmarks/*.py), so that they do not rot silently when the
code they time changes: each timing function is called on the smallest configuration its script
supports, and each script's `main` runs once end to end with its tiniest options.

Figures: a benchmark module's `time` is replaced by a scripted clock (`ScriptedClock`: perf_counter
returns start/end pairs of given intervals; `ManualClock`: time moves only when a fake tokenizer
says so), so every rate, best-of, median, FLOP/s and MFU figure, returned and printed, must equal
the one worked out by hand from those intervals. FLOP and parameter counts are checked against
counts by hand (MAGVIT `tiny` layer by layer, the ToyLM formula), the loss memory against the bytes
of the float32 logits. time_matmul, bench_render, lm_step_seconds and data_pipeline's main run on
the real clock (positive, finite, printed = returned).

The PyTorch references (`bench_torch`, torchref.bench_magvit / bench_soundstream) need
magvit2-pytorch / audiolm-pytorch, which live only in `.venv-torchref`: those tests skip without
them; the spec the JAX side hands over and its "unavailable" path are checked here. Slow (left out
of the default run): SoundStream `small`, the smallest audio preset, takes ~30-40 s to build and
compile on 2 busy cores (audio bench_jax and main); data_pipeline's lm_step_seconds (~8 s: a
prefix LM trainer compile) and main (~12 s; its other parts are tested one by one); a second
MAGVIT variant (1x1x1 upsampling, bfloat16).
"""
import json
import math
import os
import re

import jax
import numpy as np
import pytest

from tests.helpers import load_benchmark
from tokenize_fakes import FakeAudio, FakeText



class ScriptedClock:
  """Stands in for a benchmark module's `time`: successive perf_counter() calls return the start
  and end of each interval in turn, so the k-th timed region lasts exactly intervals[k]."""

  def __init__(self, intervals):
    self.times, t = [], 100.0
    for d in intervals:
      self.times += [t, t + d]
      t += d + 1.0
    self.calls = 0

  def perf_counter(self):
    assert self.calls < len(self.times), "the benchmark read the clock more often than scripted"
    self.calls += 1
    return self.times[self.calls - 1]

  @property
  def done(self):
    return self.calls == len(self.times)


class ManualClock:
  """A `time` whose perf_counter only moves when `advance` is called."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self):
    return self.now

  def advance(self, seconds):
    self.now += seconds


def _floats(pattern, text):
  """Every number `pattern`'s groups match in `text` (multi-line mode), in order; commas dropped."""
  found = re.findall(pattern, text, re.M)
  return [float(x.replace(",", "")) for m in found for x in (m if isinstance(m, tuple) else (m,))]


# -- mfu.py ----------------------------------------------------------------------------------------
mfu = load_benchmark("mfu")


def test_time_matmul_is_the_best_of_its_repeats(monkeypatch):
  seconds = mfu.time_matmul(32, repeats=1, dtype="bfloat16")       # real clock
  assert math.isfinite(seconds) and 0 < seconds < 10
  clock = ScriptedClock([0.5, 0.125, 0.25])
  monkeypatch.setattr(mfu, "time", clock)
  assert mfu.time_matmul(32, repeats=3) == 0.125
  assert clock.done                                   # one timed call per repeat (warm-up untimed)


def test_prefix_lm_batches_layout():
  from vp_jax.models.prefix_lm.config import preset
  from vp_jax.sequence.vocab import Special
  cfg = preset("tiny")
  lo, hi = cfg.vocab.visual_range()
  it = mfu.prefix_lm_batches(cfg, 3, 40, seed=1)
  b = next(it)
  assert set(b) == {"tokens", "prefix_length", "loss_mask", "text_embeddings", "text_mask"}
  text_len = 40 // 4                                  # min(64, seq_len // 4)
  assert b["tokens"].shape == (3, 40) and b["tokens"].dtype == np.int32
  assert (b["tokens"][:, 0] == Special.BOS).all()
  assert (b["tokens"][:, 1:1 + text_len] == Special.TEXT_SLOT).all()
  rest = b["tokens"][:, 1 + text_len:]
  assert (rest >= lo).all() and (rest < hi).all() and len(np.unique(rest)) > 10
  assert b["prefix_length"].dtype == np.int32 and (b["prefix_length"] == 20).all()
  assert b["loss_mask"].dtype == bool and b["loss_mask"].shape == (3, 40)
  assert (b["loss_mask"] == (np.arange(40) >= 20)).all()
  assert b["text_embeddings"].shape == (3, text_len, cfg.text_dim)
  assert b["text_embeddings"].dtype == np.float32
  assert b["text_mask"].shape == (3, text_len) and b["text_mask"].all()
  # Text slots cap at 64; batches are a function of (seed, index).
  assert next(mfu.prefix_lm_batches(cfg, 1, 512))["text_mask"].shape == (1, 64)
  again = mfu.prefix_lm_batches(cfg, 3, 40, seed=1)
  assert (next(again)["tokens"] == b["tokens"]).all()
  assert not (next(again)["tokens"] == b["tokens"]).all()
  assert not (next(mfu.prefix_lm_batches(cfg, 3, 40, seed=2))["tokens"] == b["tokens"]).all()


def test_measure_train_step_rejects_no_steps():
  with pytest.raises(ValueError, match="steps=0"):
    mfu.measure_train_step("tiny", steps=0)


def test_mfu_main_end_to_end(monkeypatch, capsys):
  from vp_jax.models.toy_lm import PRESETS
  # Matmuls 32 and 64 (one timed call each), the 2 warm-up steps together, then 2 timed steps.
  clock = ScriptedClock([2 ** -14, 2 ** -14, 3.0, 0.5, 0.25])
  monkeypatch.setattr(mfu, "time", clock)
  r = mfu.main(["--preset", "tiny", "--steps", "2", "--batch_size", "8", "--sizes", "32", "64",
                "--repeats", "1"])
  out = capsys.readouterr().out
  assert clock.done
  # Peak: the faster size, 2 x 64^3 FLOPs in 2^-14 s = 2^33 FLOP/s.
  assert r["peak_gflops"] == pytest.approx(2 ** 33 / 1e9, rel=1e-12)
  # ToyLM `tiny` (vocab 256, len 64, 2 layers, width 64, mlp 256): matmul weights per layer
  # 4 x 64^2 + 2 x 64 x 256, output layer 64 x 256; attention 12 x layers x len x width.
  weights = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 64 * 256
  assert r["config"] == PRESETS["tiny"] and r["seq_len"] == 64 and r["tokens_per_step"] == 512
  assert r["flops_per_token"] == 6 * weights + 12 * 2 * 64 * 64 == 786_432
  assert r["devices"] == jax.device_count() == 8 and r["steps"] == 2
  assert r["warmup_s"] == 3.0 and r["step_s"] == 0.375 and r["step_s_min"] == 0.25
  assert r["tokens_per_s"] == pytest.approx(512 / 0.375)
  # 786,432 x 512 FLOPs / 0.375 s = 2^30 FLOP/s: MFU 2^30 / 2^33.
  assert r["model_flops_per_s"] == pytest.approx(2 ** 30) and r["mfu"] == pytest.approx(0.125)
  assert abs(r["final_loss"] - math.log(256)) < 1.0   # 4 steps from random init: ~uniform
  rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
  assert rows == [("32", "0.06", "1.1"), ("64", "0.06", "8.6")]
  assert _floats(r"peak: ([\d.]+) GFLOP/s", out) == [8.6]
  assert _floats(r"step time \(mean\)\s+([\d.]+) ms", out) == [375.0]
  assert _floats(r"tokens/s\s+([\d,]+)", out) == [1365]
  assert _floats(r"train FLOPs per token\s+([\d.]+) MFLOP", out) == [0.79]
  assert _floats(r"model FLOP/s\s+([\d.]+) GFLOP/s", out) == [1.1]
  assert _floats(r"MFU\s+([\d.]+) %", out) == [12.5]
  monkeypatch.setattr(mfu, "time", ScriptedClock([0.5]))     # its matmul peak, then the error
  with pytest.raises(SystemExit):                    # a preset of the other model kind
    mfu.main(["--model", "toy_lm", "--preset", "cpu", "--sizes", "32", "--repeats", "1"])
  assert "is not a toy_lm preset" in capsys.readouterr().err


# -- prefix_lm_decode.py ---------------------------------------------------------------------------
pld = load_benchmark("prefix_lm_decode")


def test_loss_temp_bytes_by_hand():
  from vp_jax.sequence.vocab import PAPER
  logits = lambda b, n: b * n * PAPER.size * 4        # float32 [B, L, V] bytes
  # Naive: the full logits and their gradient (softmax - one-hot) are both live, plus a few
  # scalars; the width does not matter.
  naive = pld.loss_temp_bytes(32, 16, 0)
  assert 0 <= naive - 2 * logits(1, 32) < 1024, naive - 2 * logits(1, 32)
  assert 0 <= pld.loss_temp_bytes(16, 8, 0, batch_size=2) - 2 * logits(2, 16) < 1024
  # Chunked (4 positions at a time): never the full logits, so the same at any length.
  short, long = pld.loss_temp_bytes(16, 8, 4), pld.loss_temp_bytes(64, 8, 4)
  assert long < logits(1, 64) and abs(long - short) < 4096


def test_prefix_lm_decode_main_end_to_end(monkeypatch, capsys):
  from vp_jax.sequence.vocab import PAPER
  # Per length: 2 timed passes of the 2 cached decode steps (per token = pass / 2, best kept),
  # then 2 timed full recomputations (best kept).
  clock = ScriptedClock([1.0, 0.5, 0.75, 1.5,       # length 8
                         0.5, 1.0, 3.0, 1.5])       # length 16
  monkeypatch.setattr(pld, "time", clock)
  r = pld.main(["--preset", "tiny", "--lengths", "8", "16", "--decode_tokens", "2",
                "--loss_length", "16", "--loss_width", "8", "--loss_chunk", "4"])
  out = capsys.readouterr().out
  assert clock.done
  assert r["decode"] == [{"length": 8, "cached_s": 0.25, "recompute_s": 0.75, "speedup": 3.0},
                         {"length": 16, "cached_s": 0.25, "recompute_s": 1.5, "speedup": 6.0}]
  rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)x$", out, re.M)
  assert rows == [("8", "250.00", "750.0", "3"), ("16", "250.00", "1500.0", "6")]
  assert "longest / shortest length: 1.00x (lengths x2.0)" in out
  assert 0 <= r["loss_naive_bytes"] - 2 * 16 * PAPER.size * 4 < 1024   # see the test above
  assert r["loss_chunked_bytes"] < r["loss_naive_bytes"]
  naive_gib, chunked_gib = _floats(r"\):\s+([\d.]+) GiB", out)
  assert naive_gib == 0.03 == pytest.approx(r["loss_naive_bytes"] / 2 ** 30, abs=0.006)
  assert chunked_gib == pytest.approx(r["loss_chunked_bytes"] / 2 ** 30, abs=0.006)
  (less,) = _floats(r"GiB \(([\d.]+)x less\)", out)
  assert less == pytest.approx(r["loss_naive_bytes"] / r["loss_chunked_bytes"], abs=0.051)


# -- video_tokenizer.py ----------------------------------------------------------------------------
vt = load_benchmark("video_tokenizer")

# MAGVIT `tiny` (widths 8, 8, 16, 16; 1 residual block per level; 18-bit LFQ) on 1 x 5 x 8 x 8
# clips, layer by layer: (output positions, in, out, kernel taps) of every convolution. Encoder:
# 5x8x8 -> 5x4x4 -> 3x2x2 -> 2x1x1 (space every level, time at the last two).
_ENC = [(320, 3, 8, 27),                                  # conv_in
        (320, 8, 8, 27), (320, 8, 8, 27), (80, 8, 8, 27),      # level 0 block, downsample
        (80, 8, 8, 27), (80, 8, 8, 27), (12, 8, 8, 27),        # level 1 block, downsample (time)
        (12, 8, 16, 27), (12, 16, 16, 27), (12, 8, 16, 1),     # level 2 block (8 -> 16, skip)
        (2, 16, 16, 27),                                       # downsample (time)
        (2, 16, 16, 27), (2, 16, 16, 27),                      # level 3 block
        (2, 16, 16, 27), (2, 16, 16, 27),                      # mid block
        (2, 16, 18, 1)]                                        # conv_out to the 18 bits
# Decoder: conv_in, mid, then per level a block and a depth-to-space upsampling conv (to t*4*C).
_DEC = [(2, 18, 16, 27), (2, 16, 16, 27), (2, 16, 16, 27),
        (2, 16, 16, 27), (2, 16, 16, 27), (2, 16, 128, 27),    # -> 3x2x2
        (12, 16, 16, 27), (12, 16, 16, 27), (12, 16, 128, 27),  # -> 5x4x4
        (80, 16, 8, 27), (80, 8, 8, 27), (80, 16, 8, 1), (80, 8, 32, 27),   # -> 5x8x8
        (320, 8, 8, 27), (320, 8, 8, 27), (320, 8, 3, 27)]
_ADAGN = [(2, 16), (3, 16), (5, 16), (5, 8)]   # (frames, width): latent [.., 18] @ [18, 2 width]
_GROUP_NORM_WIDTHS = [8, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16,          # encoder (+ norm_out)
                      16, 16, 16, 16, 16, 16, 16, 8, 8, 8, 8]         # decoder (+ norm_out)
_conv_flops = lambda layers: sum(2 * p * cin * cout * k for p, cin, cout, k in layers)
TINY_ENCODE_FLOPS = _conv_flops(_ENC)
TINY_DECODE_FLOPS = _conv_flops(_DEC) + sum(2 * t * 18 * 2 * c for t, c in _ADAGN)
TINY_PARAMS = (sum(k * cin * cout + cout for _, cin, cout, k in _ENC + _DEC)
               + sum(18 * 2 * c + 2 * c for _, c in _ADAGN) + 2 * sum(_GROUP_NORM_WIDTHS))


def test_tiny_hand_counts():
  assert (TINY_ENCODE_FLOPS, TINY_DECODE_FLOPS, TINY_PARAMS) == (3_888_768, 6_618_560, 235_861)


@pytest.fixture(scope="module")
def tiny_clips():
  from vp_jax.models.magvit import synthetic
  clips = synthetic.moving_shapes_batch(0, 0, 1, 5, 8, 8)
  assert clips.shape == (1, 5, 8, 8, 3) and clips.dtype == np.uint8
  return clips


def test_video_bench_torch_spec_and_unavailable_reference(monkeypatch, tiny_clips, tmp_path):
  seen = {}

  def fake_reference(kind, spec, array, python):
    seen.update(kind=kind, spec=spec, array=array, python=python)
    return "stub"

  monkeypatch.setattr(vt, "run_reference", fake_reference)
  assert vt.bench_torch("tiny", tiny_clips, 3, 2, "/some/python") == "stub"
  assert seen["kind"] == "magvit" and seen["array"] is tiny_clips
  assert seen["spec"] == {"filters": 8, "channel_multipliers": [1, 1, 2, 2], "num_res_blocks": 1,
                          "temporal_downsample": [False, True, True], "embedding_dim": 18,
                          "repeats": 3, "threads": 2}
  monkeypatch.undo()
  missing = str(tmp_path / "python")
  assert vt.bench_torch("tiny", tiny_clips, 1, 1, missing) == \
      f"no interpreter at {missing} (make .venv-torchref/.installed)"


def test_video_tokenizer_main_end_to_end(monkeypatch, capsys, tmp_path):
  # The peak is mfu.py's (tested above); a fixed 8 GFLOP/s here. One timed encode and one timed
  # decode after the warm-up. Only the 3x3x3-upsampling variant (each variant is a compile).
  peak_kwargs = []
  monkeypatch.setattr(vt, "measure_matmul_peak", lambda **kw: peak_kwargs.append(kw) or 8.0)
  clock = ScriptedClock([2 ** -10, 2 ** -9])
  monkeypatch.setattr(vt, "time", clock)
  missing = str(tmp_path / "python")
  r = vt.main(["--configs", "tiny", "--frames", "5", "--size", "8", "--repeats", "1",
               "--upsample_kernels", "3", "--threads", "1", "--torch_python", missing])
  out = capsys.readouterr().out
  assert clock.done and peak_kwargs == [{"repeats": 3}]
  assert set(r) == {"tiny"} and set(r["tiny"]) == {"jax_up3"}
  res = r["tiny"]["jax_up3"]
  assert (res["config"], res["dtype"], res["params"]) == ("tiny", "float32", TINY_PARAMS)
  assert res["encode_flops"] == TINY_ENCODE_FLOPS and res["decode_flops"] == TINY_DECODE_FLOPS
  assert res["encode_fps"] == 5 * 2 ** 10 and res["decode_fps"] == 5 * 2 ** 9
  assert res["encode_gflops"] == pytest.approx(TINY_ENCODE_FLOPS * 2 ** 10 / 1e9)
  assert res["decode_gflops"] == pytest.approx(TINY_DECODE_FLOPS * 2 ** 9 / 1e9)
  assert res["encode_peak_frac"] == pytest.approx(res["encode_gflops"] / 8.0)
  assert res["decode_peak_frac"] == pytest.approx(res["decode_gflops"] / 8.0)
  # XLA's count: the convs (at least half of ours) plus elementwise work; not our convention.
  assert res["encode_xla_flops"] > TINY_ENCODE_FLOPS / 2 and res["decode_xla_flops"] > 0
  assert "matmul peak: 8.0 GFLOP/s" in out
  assert "tiny 1x5x8x8, 3x3x3 upsampling convs, float32 activations" in out
  figures = re.findall(r"(encode|decode) ([\d.]+) frames/s \(([\d.]+) GFLOP, ([\d.]+) GFLOP/s, "
                       r"(\d+)% of peak\)", out)
  # Encode 3.89 MFLOP in 2^-10 s = 3.98 GFLOP/s; decode 6.62 MFLOP in 2^-9 s = 3.39 GFLOP/s.
  assert figures == [("encode", "5120.00", "0.0", "4.0", "50"),
                     ("decode", "2560.00", "0.0", "3.4", "42")]
  assert _floats(r"vp_jax \(([\d.]+)M params\)", out) == [0.24]
  assert out.count(f"magvit2-pytorch: unavailable (no interpreter at {missing}") == 1


@pytest.mark.slow  # ~10 s: another tokenizer compile
def test_video_bench_jax_variants(monkeypatch, tiny_clips):
  clock = ScriptedClock([2 ** -10, 2 ** -11])
  monkeypatch.setattr(vt, "time", clock)
  r = vt.bench_jax("tiny", tiny_clips, repeats=1, peak=8.0, upsample_kernel=1, dtype="bfloat16")
  assert clock.done and vt._key(1, "bfloat16") == "jax_up1_bfloat16" and vt._key(3, "float32") \
      == "jax_up3"
  # 1x1x1 upsampling convs: the three upsampling convs' 27 taps become 1; bfloat16 activations
  # change no count.
  ups = [layer for layer in _DEC if layer[2] in (128, 32)]
  decode_flops = TINY_DECODE_FLOPS - 26 * sum(2 * p * a * b for p, a, b, _ in ups)
  assert decode_flops == 4_062_656 and r["decode_flops"] == decode_flops
  assert r["encode_flops"] == TINY_ENCODE_FLOPS and r["dtype"] == "bfloat16"
  assert r["params"] == TINY_PARAMS - 26 * sum(a * b for _, a, b, _ in ups)
  assert r["decode_fps"] == 5 * 2 ** 11
  assert r["decode_gflops"] == pytest.approx(decode_flops * 2 ** 11 / 1e9)


# -- audio_tokenizer.py ----------------------------------------------------------------------------
at = load_benchmark("audio_tokenizer")


def test_audio_clips_are_the_documented_input():
  wave = at.clips(2)
  assert wave.shape == (2, 34_000) and wave.dtype == np.float32 and at.SECONDS == 2.125
  assert np.abs(wave).max() <= 1 and 0.25 < wave.std() < 0.35       # 0.3 x N(0, 1), clipped
  assert (at.clips(2) == wave).all() and not (wave[0] == wave[1]).all()


def test_audio_bench_torch_spec_and_unavailable_reference(monkeypatch, tmp_path):
  from vp_jax.models.soundstream.config import preset
  seen = []

  def fake_reference(*args):
    seen.append(args)
    return "stub"

  monkeypatch.setattr(at, "run_reference", fake_reference)
  wave = np.zeros((1, 16), np.float32)
  assert at.bench_torch(preset("small"), wave, 5, 2, "/some/python") == "stub"
  (kind, spec, array, python), = seen
  assert (kind, python) == ("soundstream", "/some/python") and array is wave
  assert spec == {"channels": 8, "strides": [2, 4, 5, 8], "channel_mults": [2, 4, 8, 16],
                  "dilations": [1, 3, 9], "embed_dim": 64, "codebook_size": 1024,
                  "num_levels": 4, "sample_rate": 16_000, "repeats": 5, "threads": 2}
  json.dumps(spec)                                   # what run_reference hands over
  monkeypatch.undo()
  missing = str(tmp_path / "python")
  assert at.bench_torch(preset("small"), wave, 1, 1, missing) == \
      f"no interpreter at {missing} (make .venv-torchref/.installed)"


@pytest.mark.slow  # ~30-40 s: builds SoundStream `small` (with its discriminators) and compiles it
def test_audio_bench_jax_figures(monkeypatch):
  from flax import nnx
  from vp_jax.models.soundstream.config import preset
  from vp_jax.models.soundstream.model import SoundStream
  clock = ScriptedClock([0.5, 0.125, 0.25, 1.0, 0.75, 0.5])  # encode x 3, decode x 3: medians
  monkeypatch.setattr(at, "time", clock)
  r = at.bench_jax("small", at.clips(1), repeats=3)
  assert clock.done
  assert r["encode_s"] == 0.25 and r["decode_s"] == 0.75 and r["config"] == preset("small")
  # Codec parameters: the encoder's and decoder's, not the discriminators'.
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: SoundStream(preset("small"), rngs=nnx.Rngs(0)))
  count = lambda m: sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert r["params"] == count(model.encoder) + count(model.decoder) < count(model)


@pytest.mark.slow  # ~30-40 s, as above
def test_audio_tokenizer_main_end_to_end(capsys, tmp_path):
  missing = str(tmp_path / "python")
  r = at.main(["--batch", "1", "--repeats", "1", "--presets", "small", "--threads", "1",
               "--torch_python", missing])
  out = capsys.readouterr().out
  jax_r = r["small"]["jax"]
  assert set(r["small"]) == {"jax"}
  assert 0 < jax_r["encode_s"] < 60 and 0 < jax_r["decode_s"] < 60
  (line,) = [l for l in out.splitlines() if "vp_jax small" in l]
  enc_rt, enc_ms, dec_rt, dec_ms = _floats(r"([\d.]+)x(?: real time)? \(\s*([\d.]+) ms\)", line)
  assert enc_rt == pytest.approx(at.SECONDS / jax_r["encode_s"], abs=0.051)
  assert enc_ms == pytest.approx(jax_r["encode_s"] * 1e3, abs=0.051)
  assert dec_rt == pytest.approx(at.SECONDS / jax_r["decode_s"], abs=0.051)
  assert dec_ms == pytest.approx(jax_r["decode_s"] * 1e3, abs=0.051)
  assert _floats(r"\(([\d.]+)M codec params\)", line) == [round(jax_r["params"] / 1e6, 2)]
  assert f"audiolm-pytorch small: unavailable (no interpreter at {missing}" in out


# -- torchref.py (the reference side, in the reference venv) ---------------------------------------
torchref = load_benchmark("torchref")


def test_torchref_main_usage():
  with pytest.raises(SystemExit, match="usage: torchref.py magvit|soundstream"):
    torchref.main(["nope", "{}", "x.npy"])


def test_torchref_bench_magvit():
  pytest.importorskip("magvit2_pytorch")            # (imports torch; absent: skip without it)
  pytest.importorskip("torch")
  from vp_jax.models.magvit import preset
  from vp_jax.models.magvit import synthetic
  cfg = preset("tiny")
  spec = {"filters": cfg.filters, "channel_multipliers": list(cfg.channel_multipliers),
          "num_res_blocks": cfg.num_res_blocks,
          "temporal_downsample": list(cfg.temporal_downsample),
          "embedding_dim": cfg.embedding_dim, "repeats": 2, "threads": 1}
  clips = synthetic.moving_shapes_batch(0, 0, 1, 5, 16, 16)
  r = torchref.bench_magvit(spec, clips)
  assert len(r["encode_all_s"]) == len(r["decode_all_s"]) == 2
  assert r["encode_s"] == min(r["encode_all_s"]) and r["decode_s"] == min(r["decode_all_s"])
  assert r["encode_fps"] == pytest.approx(5 / r["encode_s"])
  assert r["decode_fps"] == pytest.approx(5 / r["decode_s"])
  assert r["layers"] == [list(l) for l in torchref.magvit_layers(8, [1, 1, 2, 2], 1,
                                                                 [False, True, True])]
  assert r["recon_shape"][:2] == [1, 3] and r["recon_shape"][-2:] == [16, 16]
  assert r["threads"] == 1 and r["params"] > 0 and r["encode_flops"] > 0 and r["decode_flops"] > 0


def test_torchref_bench_soundstream():
  pytest.importorskip("audiolm_pytorch")
  pytest.importorskip("torch")
  spec = {"channels": 8, "strides": [2, 4, 5, 8], "channel_mults": [2, 4, 8, 16],
          "dilations": [1, 3, 9], "embed_dim": 64, "codebook_size": 1024, "num_levels": 4,
          "sample_rate": 16_000, "repeats": 3, "threads": 1}
  r = torchref.bench_soundstream(spec, at.clips(1))
  assert len(r["encode_all_s"]) == len(r["decode_all_s"]) == 3
  assert r["encode_s"] == sorted(r["encode_all_s"])[1]
  assert r["decode_s"] == sorted(r["decode_all_s"])[1]
  assert 106 in r["codes_shape"] and 4 in r["codes_shape"]   # 34,000 // 320 frames x 4 levels
  assert r["threads"] == 1 and r["params"] > 0 and r["encode_flops"] > 0


def _reference_python():
  python = os.environ.get("TORCHREF_PYTHON", torchref.DEFAULT_PYTHON)
  if not os.path.exists(python):
    pytest.skip(f"no reference venv at {python} (make .venv-torchref/.installed)")
  return python


def test_video_bench_torch_in_the_reference_venv():
  python = _reference_python()
  from vp_jax.models.magvit import synthetic
  clips = synthetic.moving_shapes_batch(0, 0, 1, 5, 16, 16)
  r = vt.bench_torch("tiny", clips, 1, 1, python)
  assert isinstance(r, dict), r
  assert r["encode_fps"] == pytest.approx(5 / r["encode_s"]) and r["threads"] == 1


def test_audio_bench_torch_in_the_reference_venv():
  python = _reference_python()
  from vp_jax.models.soundstream.config import preset
  r = at.bench_torch(preset("small"), at.clips(1), 1, 1, python)
  assert isinstance(r, dict), r
  assert r["encode_s"] > 0 and r["decode_s"] > 0 and r["threads"] == 1


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
  rows = _floats(r"^  \S.*\s(\d+\.\d\d)$", printed)
  assert rows == [pytest.approx(out[k], abs=0.0051) for k in keys]
  (total, video_s, audio_s, text_s) = _floats(
      r"tokenization of 2 clips: ([\d.]+) s, of which MAGVIT ([\d.]+) s, SoundStream ([\d.]+) s, "
      r"T5 ([\d.]+) s", printed)
  assert total == pytest.approx(2 / out["tokenize_32"], abs=0.051)
  assert video_s == pytest.approx(out["tokenize_video_s"], abs=0.051)
  step_s = out["lm_step_s_16"]
  assert 0 < step_s < 30 and out["lm_clips_per_s_16"] == pytest.approx(8 / step_s)
  (ms, clips) = _floats(r"batch 8 x 16 tokens\): ([\d.]+) ms/step -> consumes ([\d.]+) clips/s",
                        printed)
  assert ms == pytest.approx(step_s * 1000, abs=0.51)
  assert clips == pytest.approx(8 / step_s, abs=0.051)


# -- text_encoder.py, agd_padding.py ---------------------------------------------------------------
def test_text_encoder_main_end_to_end(monkeypatch, capsys):
  te = load_benchmark("text_encoder")
  clock = ScriptedClock([0.5])                       # one timed call after the warm-up
  monkeypatch.setattr(te, "time", clock)
  r = te.main(["--preset", "demo", "--num_texts", "8", "--batch_size", "8", "--repeats", "1"])
  out = capsys.readouterr().out
  # The batch is a multiple of the 8 batch-parallel devices.
  assert r["preset"] == "t5-demo" and r["num_texts"] == 8 and r["batch_size"] == 8
  assert r["params"] > 0 and 9 <= r["real_tokens_per_text"] <= 40
  assert clock.done and r["seconds"] == 0.5 and r["texts_per_s"] == 16.0
  assert re.search(r"^t5-demo \([\d.]+M encoder params, float32\): 16\.0 captions/s at 64 tokens "
                   r"\(batch 8, 8 captions in 0\.500 s\)$", out, re.M), out


def test_agd_padding_main_end_to_end(capsys):
  agd = load_benchmark("agd_padding")
  r = agd.main([])
  out = capsys.readouterr().out
  lengths = {k: int(n) for k, n in re.findall(r"^(\w+)\s+(\d+) tokens$", out, re.M)}
  assert set(lengths) == set(agd.KINDS)
  for name, rates in agd.MIXTURES.items():
    mean = sum(p * lengths[k] for k, p in rates.items()) / sum(rates.values())
    assert r[name] == pytest.approx(1 - mean / max(lengths[k] for k in rates))
  printed = dict(re.findall(r"^(\w+)\s+padded-to-longest padding ratio ([\d.]+)", out, re.M))
  assert {k: float(v) for k, v in printed.items()} == {k: pytest.approx(v, abs=0.0005)
                                                      for k, v in r.items()}
