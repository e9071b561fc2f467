"""KV-cache decoding vs full recomputation, and the memory of the chunked vs naive LM loss.

Why: the LM issue's targets are a per-token decode cost nearly flat in sequence length with at least
80x speedup over recomputing the whole sequence at 1280 tokens, and a loss over the ~266k-id
vocabulary that never holds full float32 logits. Both are measured here, in one process, on
whatever machine runs it.

1. Decoding, for each length L in --lengths (default 256, 1280, 2240), batch --batch_size:
   - cached: prefill L - n tokens, then n = --decode_tokens jitted `decode_step` calls with the
     cache donated (in place, as in the sampler's loop); the per-token time is their mean (the
     prefill is not counted);
   - recompute: one jitted forward over all L tokens returning the last position's logits, which
     is what sampling without a cache costs per generated token at length L;
   - speedup = recompute time / cached per-token time.
2. Loss memory at --loss_length tokens (default 2240) with the paper's 266,496-id vocabulary and
   width --loss_width: XLA's compiled temporary memory (`memory_analysis().temp_size_in_bytes`)
   of value_and_grad of the output-layer loss, chunked (`loss_chunk_length`) vs naive (0). Compiled
   only, never run: the naive version needs several GB.

Run:  python benchmarks/prefix_lm_decode.py [--preset bench] [--lengths 256 1280 2240]
"""
from __future__ import annotations

import argparse
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.models.prefix_lm.config import PRESETS, preset
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.nn.cross_entropy import cross_entropy_sums
from vp_jax.sequence.vocab import PAPER


def _timed(fn, *args, repeats: int = 3) -> float:
  jax.block_until_ready(fn(*args))                      # compile + warm-up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def measure_decode(model: PrefixLM, length: int, batch_size: int, decode_tokens: int) -> dict:
  """Per-token seconds of cached decoding and of full recomputation at `length` tokens."""
  cfg = model.cfg
  rng = np.random.default_rng(length)
  lo, hi = cfg.vocab.visual_range()
  tokens = jnp.asarray(rng.integers(lo, hi, (batch_size, length)), jnp.int32)
  prefix = length - decode_tokens
  graphdef, state = nnx.split(model)

  @functools.partial(jax.jit, static_argnames="cache_length")
  def prefill(state, tokens, cache_length):
    return nnx.merge(graphdef, state).prefill(tokens, cache_length=cache_length)

  # The cache is donated, as it is inside the sampler's while loop (a loop carry), so the one-slot
  # update is in place instead of a copy of the whole cache per token.
  @functools.partial(jax.jit, donate_argnums=(3,))
  def decode(state, layers, token, cache):
    return nnx.merge(graphdef, state).decode_step(token, cache, layers)

  # Sliced once, as the sampler does before its token loop (PrefixLM.decode_layers).
  layers = jax.jit(lambda state: nnx.merge(graphdef, state).decode_layers())(state)

  @jax.jit
  def recompute(state, tokens):
    m = nnx.merge(graphdef, state)
    hidden = m(tokens, prefix_length=jnp.zeros((tokens.shape[0],), jnp.int32))
    return m.project_logits(hidden[:, -1])

  fresh_cache = lambda: jax.block_until_ready(
      prefill(state, tokens[:, :prefix], cache_length=length)[1])
  logits, c = decode(state, layers, tokens[:, prefix], fresh_cache())      # compile
  jax.block_until_ready(logits)
  best = float("inf")
  for _ in range(2):
    c = fresh_cache()
    t0 = time.perf_counter()
    for i in range(prefix, length):
      logits, c = decode(state, layers, tokens[:, i], c)
    jax.block_until_ready(logits)
    best = min(best, (time.perf_counter() - t0) / decode_tokens)
  full = _timed(recompute, state, tokens, repeats=2)
  return {"length": length, "cached_s": best, "recompute_s": full, "speedup": full / best}


def loss_temp_bytes(length: int, width: int, chunk: int, batch_size: int = 1) -> int:
  """Compiled temporary bytes of value_and_grad of the output-layer loss (not executed)."""
  hidden = jax.ShapeDtypeStruct((batch_size, length, width), jnp.float32)
  table = jax.ShapeDtypeStruct((PAPER.size, width), jnp.float32)
  targets = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
  weights = jax.ShapeDtypeStruct((batch_size, length), jnp.float32)

  def loss(table, hidden, targets, weights):
    s = cross_entropy_sums(hidden, targets, weights, lambda h: h @ table.T, chunk)
    return s["nll"] / s["weight"]

  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(
      table, hidden, targets, weights).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="bench", choices=sorted(PRESETS))
  p.add_argument("--lengths", type=int, nargs="+", default=[256, 1280, 2240])
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--decode_tokens", type=int, default=32)
  p.add_argument("--loss_length", type=int, default=2240)
  p.add_argument("--loss_width", type=int, default=768, help="300m preset width")
  p.add_argument("--loss_chunk", type=int, default=128)
  args = p.parse_args(argv)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.devices()[0].device_kind}")
  cfg = preset(args.preset)
  with nnx.use_eager_sharding(False):
    model = nnx.jit(lambda: PrefixLM(cfg, rngs=nnx.Rngs(0)))()
  print(f"\nKV-cache decoding: PrefixLM preset {args.preset!r} ({cfg.num_params() / 1e6:.1f}M "
        f"params, vocab {cfg.vocab_size}), batch {args.batch_size}, "
        f"{args.decode_tokens} decoded tokens per length")
  print(f"  {'length':>6}  {'cached ms/token':>15}  {'recompute ms/token':>18}  {'speedup':>8}")
  rows = []
  for length in args.lengths:
    r = measure_decode(model, length, args.batch_size, args.decode_tokens)
    rows.append(r)
    print(f"  {length:>6}  {r['cached_s'] * 1e3:>15.2f}  {r['recompute_s'] * 1e3:>18.1f}  "
          f"{r['speedup']:>7.0f}x", flush=True)
  flat = rows[-1]["cached_s"] / rows[0]["cached_s"]
  print(f"  cached per-token cost, longest / shortest length: {flat:.2f}x "
        f"(lengths x{args.lengths[-1] / args.lengths[0]:.1f}); target: nearly flat, and >= 80x "
        "speedup at 1280")

  naive = loss_temp_bytes(args.loss_length, args.loss_width, 0)
  chunked = loss_temp_bytes(args.loss_length, args.loss_width, args.loss_chunk)
  print(f"\nloss + gradient, {args.loss_length} tokens x vocab {PAPER.size:,} x width "
        f"{args.loss_width}, batch 1 (XLA temporary memory, compiled, not run):")
  print(f"  naive (full float32 logits):     {naive / 2**30:7.2f} GiB")
  print(f"  chunked ({args.loss_chunk} positions/chunk):   {chunked / 2**30:7.2f} GiB "
        f"({naive / max(chunked, 1):.1f}x less)")
  return {"decode": rows, "loss_naive_bytes": naive, "loss_chunked_bytes": chunked}


if __name__ == "__main__":
  main()
