"""MAGVIT-v2 tokenizer throughput on this machine: encode and decode frames/s, GFLOP/s and the
fraction of the measured matmul peak, for the `small` preset and the paper-scale widths; and, when
`magvit2-pytorch` is importable (run this script with /work/venv_torchref/bin/python, or install it),
the same layout in magvit2-pytorch on the same clips in the same process, with the ratio.

FLOPs are XLA's own count for the compiled encode/decode (`cost_analysis()`), so the GFLOP/s figure
is "useful model FLOPs per second". The peak is `benchmarks/mfu.py`'s best jitted float32 matmul.
Timings: one warm-up call (compilation), then the best of `--repeats` calls, each ended with
`block_until_ready`. The machine's load changes the absolute numbers; ratios measured in the same
process are the meaningful figures.

  python benchmarks/video_tokenizer.py                      # small (17x64x64) + paper widths
  python benchmarks/video_tokenizer.py --configs small --frames 17 --size 128
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfu import measure_matmul_peak  # noqa: E402

from vp_jax.models.magvit import preset, synthetic  # noqa: E402
from vp_jax.models.magvit.tokenizer import create_tokenizer  # noqa: E402
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer  # noqa: E402


def _best(fn, repeats):
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best


def _flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def bench_jax(name: str, clips: np.ndarray, repeats: int, peak: float) -> dict:
  tok = VideoTokenizer.from_module(create_tokenizer(preset(name)))
  frames = clips.shape[0] * clips.shape[1]
  x = jnp.asarray(clips)
  ids = tok.encode(x)
  enc_s = _best(lambda: tok.encode(x), repeats)
  dec_s = _best(lambda: tok.decode(ids), repeats)
  enc_flops = _flops(tok._encode, tok._params, x)
  dec_flops = _flops(tok._decode, tok._params, ids)
  out = {"config": name, "encode_fps": frames / enc_s, "decode_fps": frames / dec_s,
         "encode_gflops": enc_flops / enc_s / 1e9, "decode_gflops": dec_flops / dec_s / 1e9}
  out["encode_peak_frac"] = out["encode_gflops"] / peak
  out["decode_peak_frac"] = out["decode_gflops"] / peak
  return out


def bench_torch(name: str, clips: np.ndarray, repeats: int) -> dict | None:
  """magvit2-pytorch's VideoTokenizer with the same widths, compressions and 18-bit LFQ."""
  try:
    import torch
    from magvit2_pytorch import VideoTokenizer as TorchTokenizer
  except ImportError as e:
    print(f"  magvit2-pytorch: not available ({e}); run with /work/venv_torchref/bin/python")
    return None
  cfg = preset(name)
  layers = []
  for level, mult in enumerate(cfg.channel_multipliers):
    width = cfg.filters * mult
    layers += [("consecutive_residual", cfg.num_res_blocks)]
    if level < len(cfg.channel_multipliers) - 1:
      layers.append(("compress_space", width))
      if cfg.temporal_downsample[level]:
        layers.append(("compress_time", width))
  model = TorchTokenizer(image_size=clips.shape[2], init_dim=cfg.filters, codebook_size=2 ** 18,
                         layers=tuple(layers), use_gan=False, perceptual_loss_weight=0.0).eval()
  video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
  frames = clips.shape[0] * clips.shape[1]
  with torch.no_grad():
    codes = model.tokenize(video)
    enc = _best_torch(lambda: model.tokenize(video), repeats)
    dec = _best_torch(lambda: model.decode_from_code_indices(codes), repeats)
  return {"encode_fps": frames / enc, "decode_fps": frames / dec}


def _best_torch(fn, repeats):
  fn()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--configs", default="small,paper")
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=2)
  args = p.parse_args(argv)
  peak = measure_matmul_peak(repeats=3)
  print(f"matmul peak: {peak:.1f} GFLOP/s (float32, {jax.device_count()} device(s), "
        f"{jax.devices()[0].platform})")
  clips = synthetic.moving_shapes_batch(0, 0, args.batch, args.frames, args.size, args.size)
  for name in args.configs.split(","):
    r = bench_jax(name, clips, args.repeats, peak)
    print(f"{name} {args.batch}x{args.frames}x{args.size}x{args.size}: "
          f"encode {r['encode_fps']:.1f} frames/s ({r['encode_gflops']:.1f} GFLOP/s, "
          f"{100 * r['encode_peak_frac']:.0f}% of peak); decode {r['decode_fps']:.1f} frames/s "
          f"({r['decode_gflops']:.1f} GFLOP/s, {100 * r['decode_peak_frac']:.0f}% of peak)",
          flush=True)
    t = bench_torch(name, clips, args.repeats)
    if t is not None:
      print(f"  magvit2-pytorch same layout: encode {t['encode_fps']:.1f} frames/s, decode "
            f"{t['decode_fps']:.1f} frames/s; ratio jax/torch encode "
            f"{r['encode_fps'] / t['encode_fps']:.2f}x, decode "
            f"{r['decode_fps'] / t['decode_fps']:.2f}x", flush=True)


if __name__ == "__main__":
  main()
