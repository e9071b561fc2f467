"""Smoke tests of benchmarks/mfu.py, prefix_lm_decode.py, text_encoder.py and agd_padding.py: each
timing function on its smallest configuration, and each script's `main` end to end with its
tiniest options, so the scripts do not rot silently when the code they time changes.

Figures: a benchmark module's `time` is replaced by a scripted clock (tests/fake_clocks.py:
`ScriptedClock` returns start/end pairs of given intervals; `ManualClock` moves only when a fake
says so), so every rate, best-of, median, FLOP/s and MFU figure, returned and printed, must equal
the one worked out by hand from those intervals. FLOPs follow the ToyLM formula; the loss memory is
checked against the bytes of the float32 logits; time_matmul runs on the real clock
(tests/test_benchmark_mfu.py covers mfu's FLOP accounting).
"""
import dataclasses
import math
import re

import jax
import numpy as np
import pytest

from fake_clocks import ScriptedClock, printed_floats
from tests.helpers import load_benchmark


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
  assert printed_floats(r"peak: ([\d.]+) GFLOP/s", out) == [8.6]
  assert printed_floats(r"step time \(mean\)\s+([\d.]+) ms", out) == [375.0]
  assert printed_floats(r"tokens/s\s+([\d,]+)", out) == [1365]
  assert printed_floats(r"train FLOPs per token\s+([\d.]+) MFLOP", out) == [0.79]
  assert printed_floats(r"model FLOP/s\s+([\d.]+) GFLOP/s", out) == [1.1]
  assert printed_floats(r"MFU\s+([\d.]+) %", out) == [12.5]
  monkeypatch.setattr(mfu, "time", ScriptedClock([0.5]))     # its matmul peak, then the error
  with pytest.raises(SystemExit):                    # a preset of the other model kind
    mfu.main(["--model", "toy_lm", "--preset", "cpu", "--sizes", "32", "--repeats", "1"])
  assert "is not a toy_lm preset" in capsys.readouterr().err


def test_mfu_main_peak_dtype_sets_the_peaks_operands(monkeypatch, capsys):
  """--peak_dtype bfloat16 (a GPU's or TPU's bfloat16 step): the peak is timed with bfloat16
  operands and labelled so; float32 stays the default."""
  seen = []

  class Stop(Exception):
    pass

  def peak(sizes, repeats, dtype, per_size):
    seen.append(dtype)
    per_size[sizes[0]] = (0.5, 4.0)
    return 4.0

  def no_step(*args, **kwargs):
    raise Stop

  monkeypatch.setattr(mfu, "measure_matmul_peak", peak)
  monkeypatch.setattr(mfu, "measure_train_step", no_step)
  for argv, dtype in [([], "float32"), (["--peak_dtype", "bfloat16"], "bfloat16")]:
    with pytest.raises(Stop):
      mfu.main(["--preset", "tiny", "--sizes", "32", *argv])
    assert seen[-1] == dtype
    assert f"matmul peak (jitted {dtype} jnp.dot, best of 5)" in capsys.readouterr().out


def test_parse_overrides_reads_python_literals():
  assert mfu.parse_overrides(["num_layers=4", " remat_policy = 'none' ", "dtype=\"bfloat16\""]) \
      == {"num_layers": 4, "remat_policy": "none", "dtype": "bfloat16"}
  assert mfu.parse_overrides([]) == {}
  with pytest.raises(ValueError, match=r"--override 'num_layers': expected FIELD=VALUE"):
    mfu.parse_overrides(["num_layers"])
  with pytest.raises(ValueError, match=r"--override 'remat_policy=none': the value is not a "
                                       r"Python literal"):
    mfu.parse_overrides(["remat_policy=none"])


def test_mfu_main_override_replaces_preset_fields(monkeypatch, capsys):
  """--override hands measure_train_step the preset's config with those fields replaced; a field
  the config does not have is a usage error naming it."""
  from vp_jax.models.prefix_lm.config import PRESETS as LM
  seen = {}

  class Stop(Exception):
    pass

  def no_step(preset, *args, **kwargs):
    seen["preset"] = preset
    raise Stop

  monkeypatch.setattr(mfu, "measure_matmul_peak", lambda sizes, repeats, dtype, per_size: 1.0)
  monkeypatch.setattr(mfu, "measure_train_step", no_step)
  with pytest.raises(Stop):
    mfu.main(["--model", "prefix_lm", "--preset", "tiny", "--dtype", "bfloat16",
              "--override", "num_layers=3", "--override", "remat_policy='full'"])
  assert seen["preset"] == dataclasses.replace(LM["tiny"], num_layers=3, remat_policy="full",
                                               dtype="bfloat16")
  with pytest.raises(Stop):                     # no override: the preset's name, as before
    mfu.main(["--model", "prefix_lm", "--preset", "tiny"])
  assert seen["preset"] == "tiny"
  capsys.readouterr()
  with pytest.raises(SystemExit):
    mfu.main(["--model", "prefix_lm", "--preset", "tiny", "--override", "layers=3"])
  assert "--override: PrefixLMConfig has no field(s) ['layers']" in capsys.readouterr().err


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
  naive_gib, chunked_gib = printed_floats(r"\):\s+([\d.]+) GiB", out)
  assert naive_gib == 0.03 == pytest.approx(r["loss_naive_bytes"] / 2 ** 30, abs=0.006)
  assert chunked_gib == pytest.approx(r["loss_chunked_bytes"] / 2 ** 30, abs=0.006)
  (less,) = printed_floats(r"GiB \(([\d.]+)x less\)", out)
  assert less == pytest.approx(r["loss_naive_bytes"] / r["loss_chunked_bytes"], abs=0.051)


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
