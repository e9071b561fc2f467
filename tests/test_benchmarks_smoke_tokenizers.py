"""Smoke tests of benchmarks/video_tokenizer.py, torchref.py (its MAGVIT side) and
cpu_allocator.py (the audio benchmark's are in test_benchmarks_smoke_audio.py): each timing function on its smallest configuration, and each script's `main` end
to end with its tiniest options, so the scripts do not rot silently when the tokenizers they time
change.

Figures: a benchmark module's `time` is replaced by a scripted clock (tests/fake_clocks.py:
`ScriptedClock` returns start/end pairs of given intervals; `ManualClock` moves only when a fake
says so), so every rate, best-of, median, FLOP/s and MFU figure, returned and printed, must equal
the one worked out by hand from those intervals. MAGVIT `tiny` FLOP and parameter counts are checked
layer by layer by hand.

The PyTorch reference (`bench_torch`, torchref.bench_magvit) needs magvit2-pytorch, which lives
only in `.venv-torchref`: that test skips without it; the spec the JAX side hands over and its
"unavailable" path are checked here. Slow (left out of the default run): a second MAGVIT variant
(1x1x1 upsampling, bfloat16) and XLA's convolutions.
"""
import math
import re

import jax
import numpy as np
import pytest

from fake_clocks import ScriptedClock, printed_floats
from tests.helpers import load_benchmark, reference_python


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
                          "repeats": 3, "threads": 2, "autocast": None, "device": "cpu"}
  vt.bench_torch("tiny", tiny_clips, 3, 2, "/some/python", "bfloat16", "cuda")
  assert (seen["spec"]["autocast"], seen["spec"]["device"]) == ("bfloat16", "cuda")
  monkeypatch.undo()
  missing = str(tmp_path / "python")
  assert vt.bench_torch("tiny", tiny_clips, 1, 1, missing) == \
      f"no interpreter at {missing} (make .venv-torchref/.installed)"


# Fake matmul peaks by (backend, operands): oneDNN's float32 one above XLA's, bfloat16 twice that.
_FAKE_PEAKS = {("xla", "float32"): 8.0, ("onednn", "float32"): 10.0, ("onednn", "bfloat16"): 20.0}


def _fake_peak(calls=None):
  def peak(sizes, repeats, dtype="float32", backend="xla"):
    assert sizes == vt.PEAK_SIZES
    if calls is not None:
      calls.append((backend, dtype, repeats))
    return _FAKE_PEAKS[backend, dtype]
  return peak


def test_measure_peaks_takes_the_faster_float32_and_onednns_bfloat16(monkeypatch):
  calls = []
  monkeypatch.setattr(vt, "measure_matmul_peak", _fake_peak(calls))
  monkeypatch.setattr(vt.onednn_conv, "available", lambda operands="float32": True)
  assert vt.measure_peaks(repeats=2) == {"float32": 10.0, "bfloat16": 20.0, "xla_float32": 8.0}
  assert calls == [("xla", "float32", 2), ("onednn", "float32", 2), ("onednn", "bfloat16", 2)]
  # XLA's dot faster than oneDNN's: the float32 peak is XLA's.
  monkeypatch.setitem(_FAKE_PEAKS, ("xla", "float32"), 12.0)
  assert vt.measure_peaks()["float32"] == 12.0
  # No fast bfloat16 here: no bfloat16 peak, and nothing timed for it.
  calls.clear()
  monkeypatch.setattr(vt.onednn_conv, "available", lambda operands="float32": operands == "float32")
  assert vt.measure_peaks(repeats=1) == {"float32": 12.0, "bfloat16": None, "xla_float32": 12.0}
  assert [c[:2] for c in calls] == [("xla", "float32"), ("onednn", "float32")]
  # No oneDNN at all: XLA's dot alone.
  calls.clear()
  monkeypatch.setattr(vt.onednn_conv, "available", lambda operands="float32": False)
  assert vt.measure_peaks(repeats=1) == {"float32": 12.0, "bfloat16": None, "xla_float32": 12.0}
  assert [c[:2] for c in calls] == [("xla", "float32")]


def test_on_an_accelerator_the_peaks_labels_and_reference_device_are_its_own(monkeypatch):
  """With JAX on a GPU: XLA's float32 and bfloat16 dot peaks over ACCELERATOR_PEAK_SIZES (no
  oneDNN), each variant read against its activation dtype's, XLA:GPU's convolutions named, and the
  reference on cuda."""
  assert vt.on_cpu() and vt.default_torch_device() == "cpu"     # this suite: simulated CPUs
  calls = []

  def peak(sizes, repeats, dtype="float32", backend="xla"):
    calls.append((sizes, repeats, dtype, backend))
    return {"float32": 300.0, "bfloat16": 700.0}[dtype]

  monkeypatch.setattr(vt, "measure_matmul_peak", peak)
  monkeypatch.setattr(vt.jax, "default_backend", lambda: "gpu")
  assert not vt.on_cpu() and vt.default_torch_device() == "cuda"
  assert vt.measure_peaks(repeats=4) == {"float32": 300.0, "bfloat16": 700.0,
                                         "xla_float32": 300.0}
  assert calls == [(vt.ACCELERATOR_PEAK_SIZES, 4, "float32", "xla"),
                   (vt.ACCELERATOR_PEAK_SIZES, 4, "bfloat16", "xla")]
  assert [vt.operand_arithmetic(d, c) for d, c in [
      ("float32", "onednn_bf16"), ("bfloat16", "xla"), ("float32", "onednn")]] == \
      ["float32", "bfloat16", "float32"]
  assert vt._conv_label("onednn") == vt._conv_label("xla") == "XLA:GPU's convolutions"


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_operand_arithmetic_picks_the_peak_a_variant_is_read_against(monkeypatch, fast_bf16):
  monkeypatch.setattr(vt.onednn_conv, "available",
                      lambda operands="float32": operands == "float32" or fast_bf16)
  bf16 = "bfloat16" if fast_bf16 else "float32"
  assert [vt.operand_arithmetic(d, c) for d, c in [
      ("float32", "onednn"), ("float32", "xla"), ("float32", "onednn_bf16"),
      ("bfloat16", "onednn"), ("bfloat16", "onednn_bf16"), ("bfloat16", "xla")]] == \
      ["float32", "float32", bf16, bf16, bf16, "float32"]


def test_video_tokenizer_main_end_to_end(monkeypatch, capsys, tmp_path):
  # The peaks are mfu.py's (tested in test_benchmark_mfu.py); fixed here (_FAKE_PEAKS: float32
  # 10 GFLOP/s, oneDNN's). One timed encode and one timed decode after the warm-up. Only the
  # 3x3x3-upsampling variant (each variant is a compile).
  peak_calls = []
  monkeypatch.setattr(vt, "measure_matmul_peak", _fake_peak(peak_calls))
  clock = ScriptedClock([2 ** -10, 2 ** -9])
  monkeypatch.setattr(vt, "time", clock)
  missing = str(tmp_path / "python")
  r = vt.main(["--configs", "tiny", "--frames", "5", "--size", "8", "--repeats", "1",
               "--upsample_kernels", "3", "--threads", "1", "--torch_python", missing])
  out = capsys.readouterr().out
  from vp_jax.nn import onednn_conv
  fp32_peak = 10.0 if onednn_conv.available() else 8.0
  assert clock.done and peak_calls[:1] == [("xla", "float32", 3)]
  assert [c[:2] for c in peak_calls[1:]] == (
      [("onednn", "float32")] * onednn_conv.available()
      + [("onednn", "bfloat16")] * onednn_conv.available("bfloat16"))
  assert set(r) == {"tiny"} and set(r["tiny"]) == {"jax_up3"}
  res = r["tiny"]["jax_up3"]
  assert (res["config"], res["dtype"], res["params"]) == ("tiny", "float32", TINY_PARAMS)
  assert res["encode_flops"] == TINY_ENCODE_FLOPS and res["decode_flops"] == TINY_DECODE_FLOPS
  assert res["encode_fps"] == 5 * 2 ** 10 and res["decode_fps"] == 5 * 2 ** 9
  assert res["encode_gflops"] == pytest.approx(TINY_ENCODE_FLOPS * 2 ** 10 / 1e9)
  assert res["decode_gflops"] == pytest.approx(TINY_DECODE_FLOPS * 2 ** 9 / 1e9)
  assert res["peak"] == fp32_peak
  assert res["encode_peak_frac"] == pytest.approx(res["encode_gflops"] / fp32_peak)
  assert res["decode_peak_frac"] == pytest.approx(res["decode_gflops"] / fp32_peak)
  # XLA's count: elementwise work plus the convs XLA runs itself (not oneDNN's custom calls, which
  # it does not count); not our convention.
  if onednn_conv.available():
    assert 0 < res["encode_xla_flops"] < TINY_ENCODE_FLOPS / 2
  else:
    assert res["encode_xla_flops"] > TINY_ENCODE_FLOPS / 2
  assert res["decode_xla_flops"] > 0
  assert f"matmul peaks: float32 {fp32_peak:.1f} GFLOP/s (XLA's jnp.dot 8.0), bfloat16 operands " \
      + ("20.0 GFLOP/s (oneDNN)" if onednn_conv.available("bfloat16")
         else "not fast here (read against float32's)") in out
  assert ("tiny 1x5x8x8, 3x3x3 upsampling convs, float32 activations, "
          + vt._conv_label("onednn")) in out
  figures = re.findall(r"(encode|decode) ([\d.]+) frames/s \(([\d.]+) GFLOP, ([\d.]+) GFLOP/s, "
                       r"(\d+)% of float32 peak\)", out)
  # Encode 3.89 MFLOP in 2^-10 s = 3.98 GFLOP/s; decode 6.62 MFLOP in 2^-9 s = 3.39 GFLOP/s:
  # 40 % / 34 % of oneDNN's 10 GFLOP/s (50 % / 42 % of XLA's 8 without oneDNN).
  assert figures == [("encode", "5120.00", "0.0", "4.0", "40" if fp32_peak == 10 else "50"),
                     ("decode", "2560.00", "0.0", "3.4", "34" if fp32_peak == 10 else "42")]
  assert printed_floats(r"vp_jax \(([\d.]+)M params\)", out) == [0.24]
  assert out.count(f"magvit2-pytorch: unavailable (no interpreter at {missing}") == 1


def _reference_round(encode_s, decode_s):
  return {"encode_s": encode_s, "decode_s": decode_s, "encode_fps": 5 / encode_s,
          "decode_fps": 5 / decode_s, "encode_flops": 4e6, "decode_flops": 8e6, "params": 1e5,
          "torch": "2.11.0+cpu", "threads": 1}


def test_ratio_at_peak_is_the_ratio_over_our_fraction_of_the_peak():
  ours = {"encode_fps": 300.0, "encode_peak_frac": 0.75, "decode_fps": 100.0,
          "decode_peak_frac": 1.25}
  ref = {"encode_fps": 160.0, "decode_fps": 50.0}
  assert vt.ratio_at_peak(ours, ref, "encode") == pytest.approx(2.5)     # 400 frames/s at the peak
  assert vt.ratio_at_peak(ours, ref, "decode") == pytest.approx(1.6)     # past the peak: below the 2x measured


def test_keep_faster_keeps_each_operations_best_round():
  a, b = _reference_round(0.5, 0.25), _reference_round(0.125, 1.0)
  best = vt._keep_faster(vt._keep_faster(None, a), b)
  assert (best["encode_s"], best["encode_fps"], best["decode_s"], best["decode_fps"]) == \
      (0.125, 40.0, 0.25, 20.0)
  assert a["encode_s"] == 0.5                                 # the rounds themselves untouched
  assert vt._keep_faster(best, "failed (rc 1): x") == "failed (rc 1): x"
  assert vt._keep_faster(None, "no interpreter") == "no interpreter"


def test_video_tokenizer_main_rounds_alternate_and_keep_each_sides_best(monkeypatch, capsys):
  # Two rounds: ours times encode then decode each round (2^-10, 2^-9, then 2^-11, 2^-8), and the
  # reference runs after ours in each round (0.5 / 0.25 s, then 0.125 / 1.0 s).
  monkeypatch.setattr(vt, "measure_matmul_peak", _fake_peak())
  clock = ScriptedClock([2 ** -10, 2 ** -9, 2 ** -11, 2 ** -8])
  monkeypatch.setattr(vt, "time", clock)
  order, rounds = [], iter([_reference_round(0.5, 0.25), _reference_round(0.125, 1.0)])
  real_time_jax = vt.time_jax
  monkeypatch.setattr(vt, "time_jax", lambda r, n: order.append("ours") or real_time_jax(r, n))
  monkeypatch.setattr(vt, "bench_torch", lambda *a: order.append("ref") or next(rounds))
  r = vt.main(["--configs", "tiny", "--frames", "5", "--size", "8", "--repeats", "1",
               "--upsample_kernels", "3", "--rounds", "2"])
  out = capsys.readouterr().out
  assert clock.done and order == ["ours", "ref", "ours", "ref"]
  ours, ref = r["tiny"]["jax_up3"], r["tiny"]["torch"]
  assert (ours["encode_fps"], ours["decode_fps"]) == (5 * 2 ** 11, 5 * 2 ** 9)
  assert (ref["encode_fps"], ref["decode_fps"]) == (40.0, 20.0)
  assert "2 round(s)" in out
  # At 100 % of the float32 peak (oneDNN's 10 GFLOP/s, or XLA's 8), 5 frames of the tiny
  # encode's / decode's FLOPs take FLOPs / peak: against the reference's 40 / 20 frames/s.
  from vp_jax.nn import onednn_conv
  fp32 = 10.0 if onednn_conv.available() else 8.0
  at_peak = (5 * fp32 * 1e9 / TINY_ENCODE_FLOPS / 40, 5 * fp32 * 1e9 / TINY_DECODE_FLOPS / 20)
  assert (f"encode {5 * 2 ** 11 / 40:.2f}x, decode {5 * 2 ** 9 / 20:.2f}x (target >= 2x; at "
          f"100% of our float32 peak {at_peak[0]:.2f}x / {at_peak[1]:.2f}x)") in out
  assert "tok" not in ours and "x" not in ours                # no arrays in the returned figures
  with pytest.raises(SystemExit):
    vt.main(["--configs", "tiny", "--rounds", "0"])
  assert "--rounds 0 / --repeats 2: both must be >= 1." in capsys.readouterr().err
  with pytest.raises(SystemExit):
    vt.main(["--configs", "tiny", "--torch_dtypes", "float16"])
  assert "--torch_dtypes float16: float32 and/or bfloat16." in capsys.readouterr().err


def test_video_tokenizer_main_times_both_reference_dtypes_each_round(monkeypatch, capsys):
  # --torch_dtypes float32,bfloat16: per round ours, then the reference in float32 and under
  # autocast; each of our variants is compared with both.
  monkeypatch.setattr(vt, "measure_matmul_peak", _fake_peak())
  clock = ScriptedClock([2 ** -10, 2 ** -9])
  monkeypatch.setattr(vt, "time", clock)
  calls = []
  # 4 / 2 GFLOP per encode / decode: 8 GFLOP/s in float32, 16 under autocast.
  refs = {"float32": _reference_round(0.5, 0.25), "bfloat16": _reference_round(0.25, 0.125)}
  for ref in refs.values():
    ref.update(encode_flops=4e9, decode_flops=2e9)
  # bench_torch(name, clips, repeats, threads, python, dtype, device)
  monkeypatch.setattr(vt, "bench_torch", lambda *a: calls.append(a[5:]) or refs[a[5]])
  r = vt.main(["--configs", "tiny", "--frames", "5", "--size", "8", "--repeats", "1",
               "--upsample_kernels", "3", "--torch_dtypes", "float32,bfloat16", "--no_xla_cost"])
  out = capsys.readouterr().out
  # --no_xla_cost: XLA's own count is neither compiled for nor printed as a figure.
  assert math.isnan(r["tiny"]["jax_up3"]["encode_xla_flops"])
  assert math.isnan(r["tiny"]["jax_up3"]["decode_xla_flops"])
  assert "XLA cost_analysis: not computed (--no_xla_cost)" in out
  # Each reference run is read against the peak of its own arithmetic: float32 against the float32
  # peak (_FAKE_PEAKS: oneDNN's 10, or XLA's 8 without oneDNN), autocast against oneDNN's bfloat16
  # peak (20) where the CPU runs bfloat16 fast, else against the float32 one.
  from vp_jax.nn import onednn_conv
  fp32 = 10.0 if onednn_conv.available() else 8.0
  bf16, bf16_name = (20.0, "bfloat16") if onednn_conv.available("bfloat16") else (fp32, "float32")
  fractions = re.findall(r"magvit2-pytorch[^:]*: encode [\d.]+ frames/s \([\d.]+ GFLOP, 8.0 "
                         r"GFLOP/s, (\d+)% of (\w+) peak\); decode [\d.]+ frames/s \([\d.]+ "
                         r"GFLOP, 8.0 GFLOP/s, (\d+)% of (\w+) peak\)", out)
  fractions += re.findall(r"magvit2-pytorch \(bfloat16 autocast\)[^:]*: encode [\d.]+ frames/s "
                          r"\([\d.]+ GFLOP, 16.0 GFLOP/s, (\d+)% of (\w+) peak\); decode [\d.]+ "
                          r"frames/s \([\d.]+ GFLOP, 16.0 GFLOP/s, (\d+)% of (\w+) peak\)", out)
  assert fractions == [(f"{800 / fp32:.0f}", "float32") * 2,
                       (f"{1600 / bf16:.0f}", bf16_name) * 2]
  assert clock.done and calls == [("float32", "cpu"), ("bfloat16", "cpu")]
  assert r["tiny"]["torch"]["encode_fps"] == 10.0
  assert r["tiny"]["torch_bfloat16"]["encode_fps"] == 20.0
  label = vt._conv_label("onednn")
  assert (f"float32, {label}) / magvit2-pytorch frames/s: encode {5 * 2 ** 10 / 10:.2f}x, decode "
          f"{5 * 2 ** 9 / 20:.2f}x") in out
  assert (f"float32, {label}) / magvit2-pytorch (bfloat16 autocast) frames/s: encode "
          f"{5 * 2 ** 10 / 20:.2f}x, decode {5 * 2 ** 9 / 40:.2f}x") in out
  assert "magvit2-pytorch (bfloat16 autocast) 2.11.0, 1 threads" in out


@pytest.mark.slow  # ~10 s: another tokenizer compile
def test_video_bench_jax_variants(monkeypatch, tiny_clips):
  clock = ScriptedClock([2 ** -10, 2 ** -11])
  monkeypatch.setattr(vt, "time", clock)
  r = vt.time_jax(vt.bench_jax("tiny", tiny_clips, peak=8.0, upsample_kernel=1, dtype="bfloat16"),
                  repeats=1)
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


@pytest.mark.slow  # ~20 s: two tokenizer compiles
def test_video_bench_jax_cpu_convs_variant(tiny_clips):
  """cpu_convs="xla": ours with XLA's convolutions, no oneDNN call; the default variant holds
  the oneDNN calls where XLA:CPU has them. The same FLOPs either way."""
  from vp_jax.nn import onednn_conv
  assert vt._key(3, "float32", "xla") == "jax_up3_xlaconv" and vt._key(1, "float32") == "jax_up1"
  assert vt._key(3, "float32", "onednn_bf16") == "jax_up3_bf16conv"
  assert vt._torch_key("float32") == "torch" and vt._torch_key("bfloat16") == "torch_bfloat16"
  assert vt._conv_label("onednn_bf16") == (
      "oneDNN convolutions, bfloat16 operands" if onednn_conv.available("bfloat16")
      else vt._conv_label("onednn") + ", float32 operands (no fast bfloat16 here)")
  texts = {}
  for convs in ("xla", "onednn", "onednn_bf16"):
    r = vt.bench_jax("tiny", tiny_clips, peak=8.0, cpu_convs=convs)
    tok = r["tok"]
    with jax.set_mesh(tok.mesh):
      texts[convs] = tok._encode.lower(tok._params, tok._shard_batch(r["x"])).compile().as_text()
    assert r["encode_flops"] == TINY_ENCODE_FLOPS
  assert "__onednn$convolution" not in texts["xla"] and " convolution(" in texts["xla"]
  assert ("__onednn$convolution" in texts["onednn"]) == onednn_conv.available()
  bf16_operands = "operand_layout_constraints={bf16["                # the custom call's inputs
  assert (bf16_operands in texts["onednn_bf16"]) == onednn_conv.available("bfloat16")
  assert bf16_operands not in texts["onednn"]


def test_video_bench_jax_rejects_unknown_cpu_convs(tiny_clips):
  with pytest.raises(ValueError, match="cpu_convs='mkl'; use one of"):
    vt.bench_jax("tiny", tiny_clips, peak=8.0, cpu_convs="mkl")


# -- torchref.py (the reference side, in the reference venv) ---------------------------------------
torchref = load_benchmark("torchref")


def test_torchref_main_usage():
  with pytest.raises(SystemExit, match="usage: torchref.py magvit|soundstream"):
    torchref.main(["nope", "{}", "x.npy"])


def test_video_bench_torch_in_the_reference_venv():
  """bench_torch runs torchref.bench_magvit in the reference venv (subprocess, JSON back)."""
  python = reference_python()
  from vp_jax.models.magvit import synthetic
  clips = synthetic.moving_shapes_batch(0, 0, 1, 5, 16, 16)
  r = vt.bench_torch("tiny", clips, 2, 1, python)
  assert isinstance(r, dict), r
  assert len(r["encode_all_s"]) == len(r["decode_all_s"]) == 2
  assert r["encode_s"] == min(r["encode_all_s"]) and r["decode_s"] == min(r["decode_all_s"])
  assert r["encode_fps"] == pytest.approx(5 / r["encode_s"])
  assert r["decode_fps"] == pytest.approx(5 / r["decode_s"])
  # the tiny preset's layout (filters 8, multipliers 1,1,2,2, one block, time down at levels 1-2)
  assert r["layers"] == [list(l) for l in torchref.magvit_layers(8, [1, 1, 2, 2], 1,
                                                                 [False, True, True])]
  assert r["layers"][:3] == [["consecutive_residual", 2], ["compress_space", 8],
                             ["consecutive_residual", 2]]
  # codes [B, T', H', W']: 5 frames -> 2 latent frames after 4x time compression (with the
  # reference's 3 padding frames), 16x16 -> 2x2 after 8x space; reconstruction [B, 3, T, H, W]
  assert r["codes_shape"] == [1, 2, 2, 2]
  assert r["recon_shape"] == [1, 3, 5, 16, 16]
  assert r["threads"] == 1 and r["params"] > 0 and r["encode_flops"] > 0 and r["decode_flops"] > 0
  assert r["torch"].startswith("2.11") and r["autocast"] is None
  assert r["recon_dtype"] == "torch.float32"
  auto = vt.bench_torch("tiny", clips, 1, 1, python, "bfloat16")     # torch's CPU autocast
  assert isinstance(auto, dict), auto
  assert auto["autocast"] == "bfloat16" and auto["recon_dtype"] == "torch.bfloat16"
  assert auto["codes_shape"] == r["codes_shape"] and auto["encode_flops"] == r["encode_flops"]


# -- cpu_allocator.py ------------------------------------------------------------------------------
@pytest.mark.parametrize("cpu_convs", [None, "xla"])
def test_cpu_allocator_benchmark_alternates_the_arms_and_compares_outputs(monkeypatch, capsys,
                                                                          cpu_convs):
  ca = load_benchmark("cpu_allocator")
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
  made = []
  from_module = VideoTokenizer.from_module.__func__
  monkeypatch.setattr(VideoTokenizer, "from_module", classmethod(
      lambda cls, *a, **k: made.append(from_module(cls, *a, **k)) or made[-1]))
  switched = []
  monkeypatch.setattr(ca.cpu_allocator, "_mallopt", lambda p, v: switched.append((p, v)))
  # One round, one timed call per arm and operation: glibc default encode 2^-9 s, decode 2^-8 s,
  # then keep mapped 2^-10 s and 2^-9 s.
  clock = ScriptedClock([2 ** -9, 2 ** -8, 2 ** -10, 2 ** -9])
  monkeypatch.setattr(ca, "time", clock)
  ca.main(["--config", "tiny", "--frames", "5", "--size", "8", "--rounds", "1", "--calls", "1"]
          + ([] if cpu_convs is None else ["--cpu_convs", cpu_convs]))
  out = capsys.readouterr().out
  assert clock.done
  assert switched == [(-8, 1), (-4, 65536), (-1, 128 * 1024), (-4, 0), (-1, 2 ** 31 - 1)]
  assert [t.cpu_convs for t in made] == [cpu_convs or "onednn"]
  assert f"tiny 1x5x8x8, cpu_convs {cpu_convs or 'onednn'}: 1 rounds x 1 calls per arm" in out
  two_ms = [round(1000 / 512, 1)]                               # 2^-9 s, printed to 0.1 ms
  assert printed_floats(r"encode glibc default: min +([\d.]+) ms", out) == two_ms
  assert printed_floats(r"decode keep mapped +: min +([\d.]+) ms", out) == two_ms
  assert "encode keep mapped / glibc default: 2.00x faster (min), 2.00x (median); outputs " \
         "identical: True" in out
  assert "decode keep mapped / glibc default: 2.00x faster (min), 2.00x (median); outputs " \
         "identical: True" in out
