"""Model FLOPs utilization (MFU) of the real vp_jax train step, against this machine's matmul peak.

Why: the LM issue's performance target is a train step that reaches MFU >= 50% of the *measured*
matmul peak of the machine it runs on (not a vendor datasheet number). This script measures both
sides in one run so the figure is reproducible anywhere (CPU, GPU, TPU):

  1. peak: the best GFLOP/s of a jitted float32 `jnp.dot` of square n x n matrices (FLOPs = 2 n^3),
     over a few sizes, after warm-up, best of several repetitions;
  2. model FLOP/s: `config.flops_per_token(seq_len)` (6 x matmul parameters, the output layer
     included, + 12 x layers x length x width for attention) x batch x length / step time, where
     the step is the trainer's own jitted
     `Trainer.step` (sharded state, donated buffers, AdamW, non-finite checks) on a data-parallel
     mesh over all local devices; MFU = model FLOP/s / peak.

The step is timed directly (not `Trainer.fit`, whose logging and checkpoint logic would blur the
figure): 2 warm-up steps (compilation), then `--steps` steps, each ended with
`jax.block_until_ready`.

Run:
  python benchmarks/mfu.py                       # `make bench` calls this; float32, preset "bench"
  python benchmarks/mfu.py --dtype bfloat16      # bf16 compute (fp32 master weights)
  python benchmarks/mfu.py --preset tiny --steps 5 --batch_size 8 --seq_len 32
  python benchmarks/mfu.py --model prefix_lm     # the VideoPoet prefix LM, preset "bench", 512 tokens

For the prefix LM, the chunked loss recomputes each chunk's logits in the backward pass; that
recomputation is not counted as model FLOPs (it is the cost of never holding [B, L, V] logits).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import statistics
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.data.iterators import IndexedBatchIterator, synthetic_lm_batches
from vp_jax.models.prefix_lm.config import PRESETS as PREFIX_LM_PRESETS
from vp_jax.models.prefix_lm.config import PrefixLMConfig
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.models.toy_lm import PRESETS, ToyLM, ToyLMConfig
from vp_jax.sequence.vocab import Special
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

DEFAULT_SIZES = (512, 1024, 2048)  # 4096 adds ~20 s on a 2-core CPU; pass --sizes to try it
WARMUP_STEPS = 2


def matmul_dims(size) -> tuple[int, int, int]:
  """(m, k, n) of a matmul size: an int n is the square n x n by n x n product, (m, k, n) an
  m x k by k x n one."""
  return (size,) * 3 if isinstance(size, int) else tuple(size)


def matmul_flops(size) -> float:
  """FLOPs of the matrix product of `size` (`matmul_dims`; one multiply and one add per
  inner-product term): 2 n^3 for a square one."""
  m, k, n = matmul_dims(size)
  return 2.0 * m * k * n


# How `time_matmul` multiplies: XLA's own jitted `jnp.dot` (the LM's matmuls), or oneDNN, the
# library the video tokenizer's CPU convolutions run in (vp_jax/nn/onednn_conv.py), as a 1x1
# convolution inside the XLA:CPU program. On the 2-core AVX-512 host oneDNN's kernels outran XLA's
# dot (the tokenizer's convolutions read 93-171 % of XLA's "peak", docs/magvit.md), and only
# oneDNN runs bfloat16 operands at their own rate there, so the tokenizer benchmarks read their
# GFLOP/s against oneDNN's peaks too.
MATMUL_BACKENDS = ("xla", "onednn")


def matmul_fn(backend: str = "xla", dtype: str = "float32"):
  """A jitted (a [m, k], b [k, n]) -> a @ b. "xla": `jnp.dot`, result in `dtype`; "onednn": a 1x1
  convolution by oneDNN with `dtype` operands and a float32 result (what the tokenizer's
  convolutions compute; needs `onednn_conv.available(dtype)`)."""
  if backend == "xla":
    return jax.jit(jnp.dot)
  if backend != "onednn":
    raise ValueError(f"matmul backend {backend!r}; one of {MATMUL_BACKENDS}")
  from vp_jax.nn import onednn_conv
  if not onednn_conv.available(dtype):
    raise ValueError(f"matmul backend 'onednn' with {dtype} operands: this process's XLA:CPU "
                     f"cannot run them (onednn_conv.available({dtype!r}) is False)")
  return jax.jit(lambda a, b: onednn_conv.onednn_conv(a[None], b[None], (1,), [(0, 0)],
                                                      out_dtype=jnp.float32)[0])


def time_matmul(size, repeats: int = 5, dtype: str = "float32", backend: str = "xla") -> float:
  """Best wall time in seconds of one product of `size` (n or (m, k, n), `matmul_dims`) by
  `matmul_fn(backend, dtype)` (after a warm-up)."""
  m, k, n = matmul_dims(size)
  dt = jnp.dtype(dtype)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), dt)
  b = jax.random.normal(kb, (k, n), dt)
  dot = matmul_fn(backend, dtype)
  jax.block_until_ready(dot(a, b))  # compile + warm caches
  best = math.inf
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - t0)
  return best


def measure_matmul_peak(sizes: Sequence = DEFAULT_SIZES, repeats: int = 5,
                        dtype: str = "float32", per_size: dict | None = None,
                        backend: str = "xla") -> float:
  """The machine's matmul peak in GFLOP/s: max over `sizes` (n or (m, k, n) each) of
  `matmul_flops(size)` / best time (`time_matmul(size, repeats, dtype, backend)`).

  If `per_size` is given it is filled with {size: (best seconds, GFLOP/s)}.
  """
  best_gflops = 0.0
  for n in sizes:
    seconds = time_matmul(n, repeats, dtype, backend)
    gflops = matmul_flops(n) / seconds / 1e9
    if per_size is not None:
      per_size[n] = (seconds, gflops)
    best_gflops = max(best_gflops, gflops)
  return best_gflops


def prefix_lm_batches(cfg: PrefixLMConfig, batch_size: int, seq_len: int,
                      seed: int = 0) -> IndexedBatchIterator:
  """PrefixLM batches of exactly `seq_len` tokens: <bos>, 64 text slots, then random visual ids;
  the first half is the prefix, the second half the outputs (the loss covers them)."""
  lo, hi = cfg.vocab.visual_range()
  text_len = min(64, seq_len // 4)

  def make_batch(index: int):
    rng = np.random.default_rng([seed, index])
    tokens = rng.integers(lo, hi, (batch_size, seq_len)).astype(np.int32)
    tokens[:, 0] = Special.BOS
    tokens[:, 1:1 + text_len] = Special.TEXT_SLOT
    prefix = seq_len // 2
    return {"tokens": tokens, "prefix_length": np.full((batch_size,), prefix, np.int32),
            "loss_mask": np.broadcast_to(np.arange(seq_len) >= prefix, (batch_size, seq_len)),
            "text_embeddings": rng.normal(size=(batch_size, text_len, cfg.text_dim)
                                          ).astype(np.float32),
            "text_mask": np.ones((batch_size, text_len), bool)}

  return IndexedBatchIterator(make_batch)


# Model kinds this benchmark can time: presets, module class, default length, batches.
MODELS = {
    "toy_lm": (PRESETS, ToyLM, lambda cfg: cfg.max_len,
               lambda cfg, b, l: synthetic_lm_batches(b, l, cfg.vocab_size)),
    "prefix_lm": (PREFIX_LM_PRESETS, PrefixLM, lambda cfg: 512, prefix_lm_batches),
}


def resolve_config(preset, dtype: str, model: str = "toy_lm"):
  cfg = MODELS[model][0][preset] if isinstance(preset, str) else preset
  return dataclasses.replace(cfg, dtype=dtype)


def parse_overrides(items: Sequence[str]) -> dict:
  """["num_layers=4", "remat_policy='none'"] -> {"num_layers": 4, "remat_policy": "none"}: each
  value a Python literal (`ast.literal_eval`); raises ValueError naming a malformed item."""
  out = {}
  for item in items:
    field, sep, value = item.partition("=")
    if not sep or not field.strip():
      raise ValueError(f"--override {item!r}: expected FIELD=VALUE")
    try:
      out[field.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--override {item!r}: the value is not a Python literal ({e})") from None
  return out


def build_trainer(cfg, dtype: str, steps: int, mesh=None) -> Trainer:
  """The project's Trainer over a data-parallel mesh of all local devices (or `mesh`)."""
  config = TrainerConfig(
      train_steps=steps + WARMUP_STEPS, progress=False, log_every=max(steps + WARMUP_STEPS, 1),
      compute_dtype=dtype,
      optimizers={"model": OptimizerConfig(learning_rate=1e-3, warmup_steps=0)})
  mesh = make_mesh(MeshConfig()) if mesh is None else mesh
  module = ToyLM if isinstance(cfg, ToyLMConfig) else PrefixLM
  return Trainer(lambda rngs: module(cfg, rngs=rngs), config, mesh, DEFAULT_RULES, workdir=None)


def measure_train_step(preset="bench", batch_size: int = 8, seq_len: int | None = None,
                       steps: int = 10, dtype: str = "float32", mesh=None,
                       model: str = "toy_lm") -> dict:
  """Times the trainer's jitted train step; returns step time, tokens/s and model FLOP/s.

  `preset` is a preset name of `model` (a key of MODELS) or a config; `seq_len` defaults to the
  model kind's default (ToyLM: max_len; PrefixLM: 512).
  """
  if steps < 1:
    raise ValueError(f"measure_train_step: steps={steps} must be >= 1.")
  if not isinstance(preset, str):
    model = "toy_lm" if isinstance(preset, ToyLMConfig) else "prefix_lm"
  cfg = resolve_config(preset, dtype, model)
  _, _, default_len, make_batches = MODELS[model]
  seq_len = default_len(cfg) if seq_len is None else seq_len
  trainer = build_trainer(cfg, dtype, steps, mesh)
  it = make_batches(cfg, batch_size, seq_len)
  state = trainer.init_or_restore()
  times = []
  t0 = time.perf_counter()
  for _ in range(WARMUP_STEPS):
    state, metrics = trainer.step(state, next(it))
    jax.block_until_ready((state, metrics))
  compile_s = time.perf_counter() - t0
  for _ in range(steps):
    batch = next(it)                     # host-side batch generation is not timed
    t0 = time.perf_counter()
    state, metrics = trainer.step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  return {**step_figures(cfg, batch_size, seq_len, times),
          "dtype": dtype, "devices": trainer.mesh.size, "warmup_s": compile_s,
          "final_loss": float(jax.device_get(metrics["loss"]))}


def step_figures(cfg: ToyLMConfig, batch_size: int, seq_len: int,
                 times: Sequence[float]) -> dict:
  """Throughput figures from per-step wall times; model FLOP/s uses the mean step time."""
  step_s = sum(times) / len(times)
  tokens = batch_size * seq_len
  flops_per_token = cfg.flops_per_token(seq_len)
  return {
      "config": cfg, "batch_size": batch_size, "seq_len": seq_len, "steps": len(times),
      "step_s": step_s, "step_s_median": statistics.median(times), "step_s_min": min(times),
      "tokens_per_step": tokens, "tokens_per_s": tokens / step_s,
      "flops_per_token": flops_per_token, "flops_per_step": flops_per_token * tokens,
      "model_flops_per_s": flops_per_token * tokens / step_s,
  }


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="toy_lm", choices=sorted(MODELS))
  p.add_argument("--preset", default="bench",
                 help="a preset of --model (toy_lm: tiny, bench; prefix_lm: tiny, cpu, bench, ...)")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=None,
                 help="default: ToyLM the preset's max_len, PrefixLM 512")
  p.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                 help="matmul sizes n for the peak")
  p.add_argument("--repeats", type=int, default=5, help="matmul repetitions per size (best kept)")
  p.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                 help="replace a field of the preset's config (a Python literal), e.g. "
                      "--override num_layers=4 --override remat_policy=\"'none'\"; repeatable")
  p.add_argument("--peak_dtype", default="float32", choices=("float32", "bfloat16"),
                 help="operands of the peak's matmul: float32 (XLA:CPU's fast path; the default) "
                      "or bfloat16 (the rate a bfloat16 step is bound by on a GPU or TPU)")
  args = p.parse_args(argv)

  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s): "
        f"{jax.devices()[0].device_kind}")
  per_size: dict = {}
  peak = measure_matmul_peak(args.sizes, args.repeats, args.peak_dtype, per_size)
  print(f"\nmatmul peak (jitted {args.peak_dtype} jnp.dot, best of {args.repeats})")
  print(f"  {'n':>6}  {'best time (ms)':>14}  {'GFLOP/s':>9}")
  for n, (seconds, gflops) in per_size.items():
    print(f"  {n:>6}  {seconds * 1e3:>14.2f}  {gflops:>9.1f}")
  print(f"  peak: {peak:.1f} GFLOP/s")

  if args.preset not in MODELS[args.model][0]:
    p.error(f"--preset {args.preset!r} is not a {args.model} preset: "
            f"{sorted(MODELS[args.model][0])}")
  try:
    overrides = parse_overrides(args.override)
  except ValueError as e:
    p.error(str(e))
  preset = args.preset
  if overrides:
    cfg = resolve_config(args.preset, args.dtype, args.model)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cfg)})
    if unknown:
      p.error(f"--override: {type(cfg).__name__} has no field(s) {unknown}")
    preset = dataclasses.replace(cfg, **overrides)
  r = measure_train_step(preset, args.batch_size, args.seq_len, args.steps, args.dtype,
                         model=args.model)
  cfg = r["config"]
  mfu = r["model_flops_per_s"] / (peak * 1e9)
  changed = "".join(f", {k}={v!r}" for k, v in overrides.items())
  print(f"\ntrain step: {type(cfg).__name__} preset {args.preset!r}{changed} "
        f"(layers={cfg.num_layers}, "
        f"width={cfg.embed_dim}, mlp={cfg.mlp_dim}, vocab={cfg.vocab_size}), dtype {r['dtype']}, "
        f"batch {r['batch_size']} x len {r['seq_len']}, {r['devices']} device(s), "
        f"{r['steps']} timed steps")
  rows = [
      ("warm-up (2 steps, incl. compile)", f"{r['warmup_s']:.2f} s"),
      ("step time (mean)", f"{r['step_s'] * 1e3:.1f} ms"),
      ("step time (median / min)", f"{r['step_s_median'] * 1e3:.1f} / "
                                   f"{r['step_s_min'] * 1e3:.1f} ms"),
      ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
      ("train FLOPs per token", f"{r['flops_per_token'] / 1e6:.2f} MFLOP"),
      ("train FLOPs per step", f"{r['flops_per_step'] / 1e9:.2f} GFLOP"),
      ("model FLOP/s", f"{r['model_flops_per_s'] / 1e9:.1f} GFLOP/s"),
      (f"matmul peak ({args.peak_dtype})", f"{peak:.1f} GFLOP/s"),
      ("MFU", f"{100 * mfu:.1f} %   (target >= 50 %)"),
      ("final loss", f"{r['final_loss']:.3f}"),
  ]
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    print(f"  {k:<{width}}  {v}")
  return {**r, "peak_gflops": peak, "mfu": mfu}


if __name__ == "__main__":
  main()
