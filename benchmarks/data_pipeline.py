"""Input-side throughput: decoding + preprocessing, synthetic rendering, the tokenization job with
the real tokenizers, and reading tokenized shards, next to the demo LM trainer's step rate.

Figures (all clips/s, measured in this process, so ratios are comparable on a busy machine):
  1. decode + preprocess: `video_clips` on mp4 files (320x240, 30 fps, 2.5 s, AAC audio) made here
     with PyAV -> one 17-frame 8 fps clip at 128x128 and at 32x32 with 16 kHz audio;
  2. synthetic rendering (frames + depth + flow + soundtrack + caption);
  3. the in-process tokenization job at the demo configuration: the synthetic set at its defaults
     (`SyntheticConfig()`: 32x32, 17 frames), MAGVIT-v2 `small` (`--video_preset tiny`: what
     vp_jax/demo trains) with a 10-bit LFQ (2^10 codes) and SoundStream `small` with 4 x 256 codes
     (the CPU LM vocabulary SMALL_VOCAB), the demo T5 encoder; every feature (video, first frame, 2 COMMIT conditions, stylization, audio, text).
     Untrained weights (`vp_jax.tokenizers.untrained`; throughput does not depend on their values)
     unless --video_tokenizer / --audio_tokenizer / --text_encoder name trained checkpoints. The
     seconds spent inside each tokenizer are printed too. Compilation is excluded (a warm-up job on
     other examples first);
  4. reading the tokenized shards back (`read_tokenized`), which is the input side *during* LM
     training (tokenization is offline);
  5. the demo LM trainer's step rate: the prefix LM `cpu` preset (SMALL_VOCAB, text_dim 128 as in
     vp_jax/demo) through the project's Trainer (benchmarks/mfu.py) at the demo's sequence lengths
     (32x32x17 clips: text-to-video 152 tokens; the audio tasks ~512) and batch 8 (the demo's
     lm_batch); clips/s consumed = batch x steps/s (one clip per row).

Run:  python benchmarks/data_pipeline.py [--clips 16] [--video_preset small|tiny] [--batch 8]
      [--seq_lens 152,512]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from vp_jax.data.builders import clips as clips_lib
from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, Tokenizers, tokenize_dataset
from vp_jax.data.tokenized import read_tokenized
from vp_jax.io import video as video_io

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


DEMO_CONFIG = SyntheticConfig()   # 32x32, 17 frames: what the demo tokenizes
TOKENIZE_BATCH = 8                # TokenizeConfig's default batch


def demo_tokenizer_configs(video_preset: str = "small"):
  """MAGVIT-v2 `video_preset` (2^10 codes) and SoundStream `small` (4 x 256 codes): SMALL_VOCAB's
  sizes. (The end-to-end demo, vp_jax/demo, trains MAGVIT `tiny`; `small` is the documented CPU
  recipe, ~4x the compute.)"""
  from vp_jax.models.magvit import preset as magvit_preset
  from vp_jax.models.soundstream.config import preset as soundstream_preset
  return (magvit_preset(video_preset, embedding_dim=10),
          soundstream_preset("small", codebook_size=256))


def demo_tokenizers(directory: str, video_dir: str | None = None, audio_dir: str | None = None,
                    text_dir: str | None = None, video_preset: str = "small") -> Tokenizers:
  """The demo tokenizers loaded through their public `load` APIs; untrained workdirs are written
  to `directory` for those not given."""
  from vp_jax.data.tokenize.__main__ import load_tokenizers
  from vp_jax.text.demo import build_demo_encoder
  from vp_jax.tokenizers import untrained
  magvit, soundstream = demo_tokenizer_configs(video_preset)
  if video_dir is None:
    video_dir = untrained.write_untrained_video_tokenizer(os.path.join(directory, "magvit"), magvit)
  if audio_dir is None:
    audio_dir = untrained.write_untrained_audio_tokenizer(os.path.join(directory, "soundstream"),
                                                          soundstream)
  if text_dir is None:
    text_dir = os.path.join(directory, "t5_demo")
    build_demo_encoder(text_dir)
  return load_tokenizers(video_dir, audio_dir, text_dir)


class _Timed:
  """Forwards to a tokenizer/encoder and adds up the seconds spent in its encode calls."""

  def __init__(self, inner):
    self.inner, self.seconds = inner, 0.0

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def _timed(self, fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    out = jax.block_until_ready(out) if not hasattr(out, "embeddings") else out
    self.seconds += time.perf_counter() - t0
    return out

  def encode(self, *args):
    return self._timed(self.inner.encode, *args)

  def commit_condition(self, *args):
    return self._timed(self.inner.commit_condition, *args)


def bench_tokenize(tok: Tokenizers, count: int, out: str, *, config: SyntheticConfig = DEMO_CONFIG,
                   batch: int = TOKENIZE_BATCH, seed: int = 5) -> dict:
  """clips/s of the whole job on `count` synthetic examples, and seconds inside each tokenizer."""
  timed = Tokenizers(video=_Timed(tok.video), audio=_Timed(tok.audio), text=_Timed(tok.text))
  source = SyntheticSource(dataclasses.replace(config, num_examples=count, seed=seed))
  t0 = time.perf_counter()
  tokenize_dataset(source, timed, out, TokenizeConfig(shard_size=max(batch, 8), batch_size=batch),
                   progress=False)
  seconds = time.perf_counter() - t0
  return {"clips_per_s": _rate(count, seconds), "seconds": seconds,
          "video_s": timed.video.seconds, "audio_s": timed.audio.seconds,
          "text_s": timed.text.seconds}


def bench_read(path: str, repeats: int = 20) -> float:
  ds = read_tokenized(path).repeat(repeats)
  it = ds.as_numpy_iterator()
  next(it)  # graph construction
  t0 = time.perf_counter()
  n = sum(1 for _ in it)
  return _rate(n, time.perf_counter() - t0)


def lm_step_seconds(preset: str, batch: int, seq_len: int, steps: int,
                    text_dim: int = 128) -> float:
  """Seconds per train step of the prefix LM `preset` (text_dim: the demo T5's 128, as
  vp_jax/demo sets it) through the Trainer (benchmarks/mfu.py)."""
  from vp_jax.models.prefix_lm.config import preset as lm_preset
  spec = importlib.util.spec_from_file_location("bench_mfu", ROOT / "benchmarks" / "mfu.py")
  mfu = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mfu)
  cfg = lm_preset(preset, text_dim=text_dim)
  return mfu.measure_train_step(cfg, batch, seq_len, steps, model="prefix_lm")["step_s"]


def main(argv=None, tokenizers: Tokenizers | None = None) -> dict:
  """`tokenizers`: already loaded ones (the tests pass theirs) instead of the demo's."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--clips", type=int, default=16, help="clips per measurement")
  p.add_argument("--tokenize_batch", type=int, default=TOKENIZE_BATCH)
  p.add_argument("--video_tokenizer", help="a MAGVIT workdir (default: untrained --video_preset)")
  p.add_argument("--video_preset", default="small", help="MAGVIT preset when untrained: small, tiny")
  p.add_argument("--audio_tokenizer", help="a SoundStream workdir (default: untrained demo preset)")
  p.add_argument("--text_encoder", help="a T5 checkpoint directory (default: the demo encoder)")
  p.add_argument("--lm_preset", default="cpu")
  p.add_argument("--batch", type=int, default=8, help="LM batch size (demo)")
  p.add_argument("--seq_lens", default="152,512", help="LM sequence lengths (demo tasks)")
  p.add_argument("--lm_steps", type=int, default=3)
  p.add_argument("--skip_lm", action="store_true")
  args = p.parse_args(argv)
  out: dict = {}
  import tensorflow  # noqa: F401  (import cost is not part of any figure)
  with tempfile.TemporaryDirectory() as d:
    tok = tokenizers or demo_tokenizers(d, args.video_tokenizer, args.audio_tokenizer,
                                        args.text_encoder, args.video_preset)
    # Warm-up: compiles every tokenizer shape of the job (other examples than those timed).
    bench_tokenize(tok, args.tokenize_batch, os.path.join(d, "warmup"), batch=args.tokenize_batch,
                   seed=99)
    paths = make_videos(d, max(2, args.clips // 2))
    out["decode_128"] = bench_decode(paths, (128, 128))
    out["decode_32"] = bench_decode(paths, (32, 32))
    out["render_32"] = bench_render("32x32", args.clips)
    out["render_128"] = bench_render("128x128", args.clips)
    job = bench_tokenize(tok, args.clips, os.path.join(d, "t32"), batch=args.tokenize_batch)
    out["tokenize_32"] = job["clips_per_s"]
    out.update({f"tokenize_{k}": v for k, v in job.items() if k.endswith("_s")})
    out["read_32"] = bench_read(os.path.join(d, "t32"))
  print(f"input side (clips/s, this machine, one process, {jax.device_count()} device(s))")
  rows = [("decode+preprocess mp4 320x240@30fps -> 17x128x128 + audio", out["decode_128"]),
          ("decode+preprocess mp4 320x240@30fps -> 17x32x32 + audio", out["decode_32"]),
          ("synthetic render 17x32x32 (+depth, flow, audio)", out["render_32"]),
          ("synthetic render 17x128x128", out["render_128"]),
          (f"tokenization job, MAGVIT {args.video_preset if not args.video_tokenizer else 'given'}"
           ", 17x32x32, all features", out["tokenize_32"]),
          ("read_tokenized (training-time input), 17x32x32", out["read_32"])]
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    print(f"  {k:<{width}}  {v:9.2f}")
  total = args.clips / out["tokenize_32"]
  print(f"  tokenization of {args.clips} clips: {total:.1f} s, of which MAGVIT "
        f"{out['tokenize_video_s']:.1f} s, SoundStream {out['tokenize_audio_s']:.1f} s, "
        f"T5 {out['tokenize_text_s']:.1f} s")
  if not args.skip_lm:
    for seq_len in (int(x) for x in args.seq_lens.split(",")):
      step_s = lm_step_seconds(args.lm_preset, args.batch, seq_len, args.lm_steps)
      need = args.batch / step_s
      out[f"lm_step_s_{seq_len}"], out[f"lm_clips_per_s_{seq_len}"] = step_s, need
      print(f"\nLM trainer (PrefixLM {args.lm_preset!r}, batch {args.batch} x {seq_len} tokens): "
            f"{step_s * 1000:.0f} ms/step -> consumes {need:.1f} clips/s; read_tokenized "
            f"headroom {out['read_32'] / need:.1f}x; offline tokenization at "
            f"{out['tokenize_32'] / need:.2f}x the LM's consumption")
  return out


if __name__ == "__main__":
  main()
