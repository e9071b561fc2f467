"""Input-side throughput: decoding + preprocessing, synthetic rendering, the tokenization job, and
reading tokenized shards, next to the LM trainer's step rate.

Figures (all clips/s, measured in this process, so ratios are comparable on a busy machine):
  1. decode + preprocess: `video_clips` on mp4 files (320x240, 30 fps, 2.5 s, AAC audio) made here
     with PyAV -> one 17-frame 8 fps clip at 128x128 and at 32x32 with 16 kHz audio;
  2. synthetic rendering (frames + depth + flow + soundtrack + caption);
  3. the in-process tokenization job with the test stand-in tokenizers (tests/data_standins.py:
     random-projection quantizers, cheap next to a real MAGVIT-v2) — the job's own overhead
     (rendering, COMMIT masks, stylization, PNG, serialization, TFRecord writes);
  4. reading the tokenized shards back (`read_tokenized`), which is the input side *during* LM
     training (tokenization is offline);
  5. the LM trainer's step rate: the foundation's ToyLM train step (benchmarks/mfu.py) at the
     demo-sized text-to-video sequence (32x32x17: 80 video + 64 text + specials ~ 160 tokens),
     standing in for the demo LM until it exists; clips/s needed = batch x steps/s.

Run:  python benchmarks/data_pipeline.py [--clips 16] [--batch 16] [--lm_preset bench]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in tokenizers live with the tests

from vp_jax.data.builders import clips as clips_lib  # noqa: E402
from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos  # noqa: E402
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, tokenize_dataset  # noqa: E402
from vp_jax.data.tokenized import read_tokenized  # noqa: E402
from vp_jax.io import video as video_io  # noqa: E402


def _rate(n: int, seconds: float) -> float:
  return n / max(seconds, 1e-9)


def make_videos(directory: str, count: int) -> list[str]:
  rng = np.random.default_rng(0)
  paths = []
  t = np.arange(int(2.5 * 16_000)) / 16_000
  yy, xx = np.mgrid[0:240, 0:320]
  for i in range(count):
    # Smooth moving gradients plus mild noise: closer to real footage than pure noise.
    frames = np.stack([np.stack([(xx + 4 * f + 30 * i) % 256, (yy + 2 * f) % 256,
                                 (xx + yy) // 3 % 256], -1) for f in range(75)]).astype(np.uint8)
    frames = np.clip(frames + rng.integers(0, 8, frames.shape), 0, 255).astype(np.uint8)
    path = os.path.join(directory, f"v{i}.mp4")
    video_io.write_mp4(path, frames, fps=30, audio=(0.3 * np.sin(2 * np.pi * 440 * t)))
    paths.append(path)
  return paths


def bench_decode(paths: list[str], hw: tuple[int, int]) -> float:
  t0 = time.perf_counter()
  n = 0
  for p in paths:
    for _ in clips_lib.video_clips(p, hw=hw, num_frames=17, audio="require"):
      n += 1
  return _rate(n, time.perf_counter() - t0)


def bench_render(resolution: str, count: int) -> float:
  videos = SyntheticVideos(SyntheticConfig(resolution=resolution, num_frames=17,
                                           num_examples=count, seed=123))
  t0 = time.perf_counter()
  for i in range(count):
    videos[i]
  return _rate(count, time.perf_counter() - t0)


def bench_tokenize(resolution: str, count: int, out: str) -> float:
  from data_standins import standin_tokenizers
  source = SyntheticSource(SyntheticConfig(resolution=resolution, num_frames=17,
                                           num_examples=count, seed=5))
  t0 = time.perf_counter()
  tokenize_dataset(source, standin_tokenizers(), out, TokenizeConfig(shard_size=8, batch_size=4),
                   progress=False)
  return _rate(count, time.perf_counter() - t0)


def bench_read(path: str, repeats: int = 20) -> float:
  ds = read_tokenized(path).repeat(repeats)
  it = ds.as_numpy_iterator()
  next(it)  # graph construction
  t0 = time.perf_counter()
  n = sum(1 for _ in it)
  return _rate(n, time.perf_counter() - t0)


def lm_steps_per_s(preset: str, batch: int, seq_len: int, steps: int) -> float:
  spec = importlib.util.spec_from_file_location("bench_mfu", ROOT / "benchmarks" / "mfu.py")
  mfu = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mfu)
  import dataclasses
  cfg = dataclasses.replace(mfu.PRESETS[preset], max_len=max(seq_len, mfu.PRESETS[preset].max_len))
  r = mfu.measure_train_step(cfg, batch, seq_len, steps)
  return 1.0 / r["step_s"]


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--clips", type=int, default=16, help="clips per measurement")
  p.add_argument("--batch", type=int, default=16, help="LM batch size (demo)")
  p.add_argument("--seq_len", type=int, default=160, help="LM sequence length (demo T2V, 32x32)")
  p.add_argument("--lm_preset", default="bench")
  p.add_argument("--lm_steps", type=int, default=3)
  p.add_argument("--skip_lm", action="store_true")
  args = p.parse_args(argv)
  out: dict = {}
  import tensorflow  # noqa: F401  (import cost is not part of any figure)
  with tempfile.TemporaryDirectory() as d:
    bench_tokenize("32x32", 2, os.path.join(d, "warmup"))
    paths = make_videos(d, max(2, args.clips // 2))
    out["decode_128"] = bench_decode(paths, (128, 128))
    out["decode_32"] = bench_decode(paths, (32, 32))
    out["render_32"] = bench_render("32x32", args.clips)
    out["render_128"] = bench_render("128x128", args.clips)
    out["tokenize_32"] = bench_tokenize("32x32", args.clips, os.path.join(d, "t32"))
    out["tokenize_128"] = bench_tokenize("128x128", args.clips, os.path.join(d, "t128"))
    out["read_32"] = bench_read(os.path.join(d, "t32"))
  print("input side (clips/s, this machine, one process)")
  rows = [("decode+preprocess mp4 320x240@30fps -> 17x128x128 + audio", out["decode_128"]),
          ("decode+preprocess mp4 320x240@30fps -> 17x32x32 + audio", out["decode_32"]),
          ("synthetic render 17x32x32 (+depth, flow, audio)", out["render_32"]),
          ("synthetic render 17x128x128", out["render_128"]),
          ("tokenization job, stand-in tokenizers, 17x32x32", out["tokenize_32"]),
          ("tokenization job, stand-in tokenizers, 17x128x128", out["tokenize_128"]),
          ("read_tokenized (training-time input), 17x32x32", out["read_32"])]
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    print(f"  {k:<{width}}  {v:9.1f}")
  if not args.skip_lm:
    sps = lm_steps_per_s(args.lm_preset, args.batch, args.seq_len, args.lm_steps)
    need = sps * args.batch
    out.update(lm_steps_per_s=sps, lm_clips_per_s=need)
    print(f"\nLM trainer (ToyLM {args.lm_preset!r}, batch {args.batch} x len {args.seq_len}): "
          f"{sps:.2f} steps/s -> consumes {need:.1f} clips/s")
    print(f"  read_tokenized headroom: {out['read_32'] / need:.1f}x; offline tokenization of "
          f"1000 tiny clips with stand-ins: {1000 / out['tokenize_32']:.0f} s")
  return out


if __name__ == "__main__":
  main()
