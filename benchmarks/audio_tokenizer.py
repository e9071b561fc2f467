"""Audio tokenizer speed: encode and decode real-time factor on CPU for both SoundStream presets,
and audiolm-pytorch's SoundStream in the same configuration on the same clips, with the ratio
(issue targets: >= 20x real time for the small preset, and at least audiolm-pytorch's speed).

  python benchmarks/audio_tokenizer.py [--batch 8] [--repeats 5] [--presets small,paper]
  python benchmarks/audio_tokenizer.py --no_torch          # ours only

The reference runs in its own venv (`.venv-torchref`, `make .venv-torchref/.installed`; torch 2.11)
as a subprocess (benchmarks/torchref.py): the clips go over as an .npy file, timings come back as
JSON. Same configuration: channels, channel_mults, strides, residual dilations (1, 3, 9), latent /
codebook width, 4 x 1024 RVQ; its local-attention transformer is switched off (SoundStream has
none; neither do we); its denoising FiLM layers are only applied when `is_denoising` is passed
(not here). Remaining difference: its causal convs pad with `reflect` where ours zero-pad (same
cost). Codec parameter counts (encoder + decoder + `rq` parameters; codebooks are buffers / non-
parameter state on both sides) are printed for both. Threads: XLA's CPU backend uses all cores;
the reference gets torch.set_num_threads(--threads), default the core count.

Real-time factor = seconds of audio processed per second of compute (2.125 s clips, batched,
median over repeats after a warm-up/compile call). Randomly initialized weights: speed does not
depend on training. The ratio from the same run is the figure to read on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchref import run_reference  # noqa: E402

CLIP = 34_000           # 2.125 s at 16 kHz
SECONDS = CLIP / 16_000

def _median_time(fn, repeats):
  fn()                                      # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def clips(batch: int) -> np.ndarray:
  """The benchmark input: `batch` 2.125 s clips of clipped Gaussian noise, float32 [B, 34000]."""
  return (0.3 * np.random.default_rng(0).normal(size=(batch, CLIP))).clip(-1, 1).astype(np.float32)


def bench_jax(name: str, wave: np.ndarray, repeats: int) -> dict:
  from vp_jax.models.soundstream.config import preset
  from vp_jax.models.soundstream.model import init_model
  from vp_jax.tokenizers.audio_tokenizer import CODEC_PARTS, AudioTokenizer
  cfg = preset(name)
  model = init_model(cfg)
  _, params, _ = nnx.split(model, nnx.Param, ...)
  codec = sum(int(np.prod(x.shape)) for k, v in nnx.to_pure_dict(params).items()
              if k in CODEC_PARTS for x in jax.tree.leaves(v))
  tok = AudioTokenizer.from_model(model)
  ids = tok.encode(wave)
  enc = _median_time(lambda: tok.encode(wave), repeats)
  dec = _median_time(lambda: tok.decode(ids), repeats)
  return {"encode_s": enc, "decode_s": dec, "config": cfg, "params": codec}


def bench_torch(cfg, wave: np.ndarray, repeats: int, threads: int, python: str | None):
  """audiolm-pytorch's SoundStream with our preset's widths, strides, dilations, latent width and
  4 x 1024 RVQ (no local attention), in the reference venv on the same clips; a string when it
  cannot run."""
  spec = {"channels": cfg.channels, "strides": list(cfg.strides),
          "channel_mults": list(cfg.channel_mults), "dilations": list(cfg.dilations),
          "embed_dim": cfg.embed_dim, "codebook_size": cfg.codebook_size,
          "num_levels": cfg.num_levels, "sample_rate": cfg.sample_rate, "repeats": repeats,
          "threads": threads}
  return run_reference("soundstream", spec, wave, python)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--presets", default="small,paper")
  p.add_argument("--torch_python", default=None,
                 help="reference venv interpreter (default $TORCHREF_PYTHON or .venv-torchref)")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                 help="torch.set_num_threads for the reference (XLA's CPU backend uses all cores)")
  p.add_argument("--no_torch", action="store_true", help="skip the audiolm-pytorch comparison")
  args = p.parse_args(argv)
  audio_s = args.batch * SECONDS
  print(f"SoundStream encode/decode, batch {args.batch} x 2.125 s clips ({audio_s:.1f} s of audio),"
        f" CPU ({os.cpu_count()} cores), median of {args.repeats} after a warm-up; load average "
        f"{os.getloadavg()[0]:.2f}", flush=True)
  wave = clips(args.batch)
  results = {}
  for name in args.presets.split(","):
    r = bench_jax(name, wave, args.repeats)
    results[name] = {"jax": r}
    print(f"  vp_jax {name:6s} ({r['params'] / 1e6:.2f}M codec params): encode "
          f"{audio_s / r['encode_s']:7.1f}x real time ({r['encode_s'] * 1e3:7.1f} ms), decode "
          f"{audio_s / r['decode_s']:7.1f}x ({r['decode_s'] * 1e3:7.1f} ms)", flush=True)
    if args.no_torch:
      continue
    t = bench_torch(r["config"], wave, args.repeats, args.threads, args.torch_python)
    if isinstance(t, str):
      print(f"  audiolm-pytorch {name}: unavailable ({t})", flush=True)
      continue
    results[name]["torch"] = t
    print(f"  audiolm-pytorch {name:6s} ({t['params'] / 1e6:.2f}M codec params, torch "
          f"{t['torch'].split('+')[0]}, {t['threads']} threads): encode "
          f"{audio_s / t['encode_s']:7.1f}x real time ({t['encode_s'] * 1e3:7.1f} ms), decode "
          f"{audio_s / t['decode_s']:7.1f}x ({t['decode_s'] * 1e3:7.1f} ms)", flush=True)
    print(f"  ratio vp_jax / audiolm-pytorch speed: encode {t['encode_s'] / r['encode_s']:.2f}x, "
          f"decode {t['decode_s'] / r['decode_s']:.2f}x (target >= 1x)", flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
