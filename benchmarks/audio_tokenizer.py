"""Audio tokenizer speed: encode and decode real-time factor on CPU for both SoundStream presets,
and audiolm-pytorch's SoundStream in the same configuration when a torch interpreter with it is
available (run as a subprocess; `--torch_python`, default /work/venv_torchref/bin/python).

  python benchmarks/audio_tokenizer.py [--batch 8] [--repeats 5] [--presets small,paper]

Real-time factor = seconds of audio processed per second of compute (2.125 s clips, batched,
median over repeats after a warm-up/compile call). Randomly initialized weights: speed does not
depend on training. Target: >= 20x real time for the small preset, and at least audiolm-pytorch's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CLIP = 34_000           # 2.125 s at 16 kHz
SECONDS = CLIP / 16_000

TORCH_SCRIPT = r"""
import json, sys, time
import torch
from audiolm_pytorch import SoundStream
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
model = SoundStream(channels=cfg["channels"], strides=tuple(cfg["strides"]),
                    channel_mults=tuple(cfg["channel_mults"]), codebook_dim=cfg["embed_dim"],
                    codebook_size=cfg["codebook_size"], rq_num_quantizers=cfg["num_levels"],
                    use_lookup_free_quantizer=False, use_local_attn=False).eval()
x = torch.randn(cfg["batch"], cfg["clip"]).clamp(-1, 1) * 0.3
def timed(fn):
    fn()
    times = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out
with torch.no_grad():
    enc_t, codes = timed(lambda: model.tokenize(x))
    dec_t, _ = timed(lambda: model.decode_from_codebook_indices(codes))
print(json.dumps({"encode_s": enc_t, "decode_s": dec_t}))
"""


def _median_time(fn, repeats):
  fn()                                      # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def bench_jax(name: str, batch: int, repeats: int) -> dict:
  from vp_jax.models.soundstream.config import preset
  from vp_jax.models.soundstream.model import init_model
  from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
  cfg = preset(name)
  tok = AudioTokenizer.from_model(init_model(cfg))
  wave = (0.3 * np.random.default_rng(0).normal(size=(batch, CLIP))).clip(-1, 1).astype(np.float32)
  ids = tok.encode(wave)
  enc = _median_time(lambda: tok.encode(wave), repeats)
  dec = _median_time(lambda: tok.decode(ids), repeats)
  return {"encode_s": enc, "decode_s": dec, "config": cfg}


def bench_torch(torch_python: str, cfg, batch: int, repeats: int, threads: int) -> dict | str:
  if not os.path.exists(torch_python):
    return f"no interpreter at {torch_python}"
  args = {"channels": cfg.channels, "strides": cfg.strides, "channel_mults": cfg.channel_mults,
          "embed_dim": cfg.embed_dim, "codebook_size": cfg.codebook_size,
          "num_levels": cfg.num_levels, "batch": batch, "clip": CLIP, "repeats": repeats,
          "threads": threads}
  proc = subprocess.run([torch_python, "-c", TORCH_SCRIPT, json.dumps(args)], capture_output=True,
                        text=True, timeout=3600)
  if proc.returncode:
    return "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--presets", default="small,paper")
  p.add_argument("--torch_python", default="/work/venv_torchref/bin/python")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  args = p.parse_args(argv)
  audio_s = args.batch * SECONDS
  print(f"SoundStream encode/decode, batch {args.batch} x 2.125 s clips ({audio_s:.1f} s of audio),"
        f" CPU ({os.cpu_count()} cores), median of {args.repeats}")
  results = {}
  for name in args.presets.split(","):
    r = bench_jax(name, args.batch, args.repeats)
    results[name] = r
    line = (f"  vp_jax {name:6s}: encode {audio_s / r['encode_s']:7.1f}x real time "
            f"({r['encode_s'] * 1e3:7.1f} ms), decode {audio_s / r['decode_s']:7.1f}x "
            f"({r['decode_s'] * 1e3:7.1f} ms)")
    print(line, flush=True)
    t = bench_torch(args.torch_python, r["config"], args.batch, args.repeats, args.threads)
    if isinstance(t, str):
      print(f"  audiolm-pytorch {name}: unavailable ({t})", flush=True)
      continue
    print(f"  audiolm-pytorch {name}: encode {audio_s / t['encode_s']:7.1f}x, decode "
          f"{audio_s / t['decode_s']:7.1f}x  -> vp_jax/torch speed ratio encode "
          f"{t['encode_s'] / r['encode_s']:.2f}, decode {t['decode_s'] / r['decode_s']:.2f}",
          flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
