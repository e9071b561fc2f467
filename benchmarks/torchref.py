"""The PyTorch reference side of the tokenizer benchmarks: magvit2-pytorch's VideoTokenizer and
audiolm-pytorch's SoundStream, timed on the clips our JAX benchmark hands over.

Why a subprocess: the references need torch 2.11 + torchvision/torchaudio and their own packages,
which live only in a separate venv (`.venv-torchref`, built by `make .venv-torchref/.installed` from
benchmarks/torchref-requirements.txt); the project's .venv (jax, flax, torch 2.13 CPU for parity
tests) must not get them. So `video_tokenizer.py` / `audio_tokenizer.py` (project venv) call
`run_reference(...)`, which writes the clips to an .npy file and runs this file with the reference
venv's interpreter; this side prints one JSON line with timings, parameter count and FLOPs.
This file imports neither jax nor vp_jax: it runs in the reference venv.

Imports: `audiolm_pytorch/__init__.py` imports its HuBERT/vq-wav2vec wrappers, which import
fairseq (does not build on Python 3.11 / current pip); `magvit2_pytorch/__init__.py` imports its
trainer (accelerate, opencv, ema-pytorch, ...). We only need the model modules, so
`_import_submodule` registers each package as a bare package object (its real __path__, its
__init__ not executed) and imports the model submodule from it. Nothing is stubbed.

Timing rule (same as the JAX side of each script): one warm-up call, then `repeats` timed calls;
`best` (video) or `median` (audio) of them. torch.set_num_threads(threads): the caller passes the
core count, which is what XLA's CPU backend uses.

  <ref-venv>/bin/python benchmarks/torchref.py magvit '<json spec>' clips.npy
  <ref-venv>/bin/python benchmarks/torchref.py soundstream '<json spec>' waves.npy
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

DEFAULT_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              ".venv-torchref", "bin", "python")


# -- caller side (project venv) --------------------------------------------------------------------
def run_reference(kind: str, spec: dict, array: np.ndarray, python: str | None = None,
                  timeout: float = 3600) -> dict | str:
  """Runs the reference `kind` ('magvit' | 'soundstream') on `array` in a subprocess with the
  reference venv's `python`; returns its JSON result, or a string saying why it could not run."""
  python = python or os.environ.get("TORCHREF_PYTHON", DEFAULT_PYTHON)
  if not os.path.exists(python):
    return f"no interpreter at {python} (make .venv-torchref/.installed)"
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "input.npy")
    np.save(path, array)
    proc = subprocess.run([python, os.path.abspath(__file__), kind, json.dumps(spec), path],
                          capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return f"failed (rc {proc.returncode}): {tail}"
  return json.loads(proc.stdout.strip().splitlines()[-1])


# -- reference side (reference venv) ----------------------------------------------------------------
def _import_submodule(package: str, submodule: str):
  """Imports `package.submodule` without executing `package/__init__.py` (see module docstring)."""
  if package not in sys.modules:
    spec = importlib.util.find_spec(package)
    if spec is None:
      raise ImportError(f"{package} is not installed in {sys.executable}")
    pkg = types.ModuleType(package)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules[package] = pkg
  return importlib.import_module(f"{package}.{submodule}")


def _timed(fn, repeats: int, reduce: str, sync=lambda: None):
  """(best or median seconds, last output, all times) of `repeats` calls after a warm-up; `sync`
  waits for queued device work (torch.cuda.synchronize on a GPU, whose calls return early)."""
  out = fn()                                          # warm-up
  sync()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    sync()
    times.append(time.perf_counter() - t0)
  t = min(times) if reduce == "best" else sorted(times)[len(times) // 2]
  return t, out, times


def _flops(fn) -> float:
  """Multiply-add FLOPs (2 per MAC) of conv/matmul ops in one call, torch's own counter."""
  from torch.utils.flop_counter import FlopCounterMode
  with FlopCounterMode(display=False) as counter:
    fn()
  return float(counter.get_total_flops())


def magvit_layers(filters: int, channel_multipliers, num_res_blocks: int, temporal_downsample):
  """Our MagvitConfig layout as magvit2-pytorch `layers`: per level, 2 residual units per our
  residual block (theirs has one 3x3x3 conv, ours two), then the width change and downsampling in
  `compress_space` (+ `compress_time` where we downsample time); our middle blocks last."""
  widths = [filters * m for m in channel_multipliers]
  layers = []
  for level, _ in enumerate(widths):
    layers.append(("consecutive_residual", 2 * num_res_blocks))
    if level < len(widths) - 1:
      layers.append(("compress_space", widths[level + 1]))
      if temporal_downsample[level]:
        layers.append(("compress_time", widths[level + 1]))
  layers.append(("consecutive_residual", 2 * num_res_blocks))   # our `mid` blocks
  return tuple(layers)


def bench_magvit(spec: dict, clips: np.ndarray) -> dict:
  """clips: uint8 [B, T, H, W, 3] (H == W: magvit2-pytorch takes square frames only).
  spec["device"] "cuda": on the GPU, with cuDNN's autotuner on (`cudnn.benchmark`, as XLA:GPU
  autotunes ours) and torch's default TF32 settings (convolutions TF32, matmuls float32)."""
  import torch
  torch.set_num_threads(spec["threads"])
  device = spec.get("device", "cpu")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
  mod = _import_submodule("magvit2_pytorch", "magvit2_pytorch")
  layers = magvit_layers(spec["filters"], spec["channel_multipliers"], spec["num_res_blocks"],
                         spec["temporal_downsample"])
  torch.manual_seed(0)
  model = mod.VideoTokenizer(
      image_size=clips.shape[2], init_dim=spec["filters"], layers=layers,
      codebook_size=2 ** spec["embedding_dim"], num_codebooks=1,
      input_conv_kernel_size=(3, 3, 3), output_conv_kernel_size=(3, 3, 3),
      use_gan=False, perceptual_loss_weight=0.0, flash_attn=False).eval().to(device)
  video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float().to(device) / 127.5 - 1
  # video: [B, 3, T, H, W] in [-1, 1]
  frames = clips.shape[0] * clips.shape[1]
  # spec["autocast"] = "bfloat16": torch's autocast (convolutions in bfloat16), the reference's
  # own counterpart of our bfloat16-operand convolutions; None: float32 throughout.
  autocast = spec.get("autocast")
  with torch.inference_mode(), torch.autocast(device, dtype=getattr(torch, autocast or "float32"),
                                               enabled=bool(autocast)):
    codes = model.tokenize(video)
    enc, codes, enc_all = _timed(lambda: model.tokenize(video), spec["repeats"], "best", sync)
    dec, recon, dec_all = _timed(lambda: model.decode_from_code_indices(codes), spec["repeats"],
                                 "best", sync)
    enc_flops = _flops(lambda: model.tokenize(video))
    dec_flops = _flops(lambda: model.decode_from_code_indices(codes))
  return {"encode_s": enc, "decode_s": dec, "encode_all_s": enc_all, "decode_all_s": dec_all,
          "encode_fps": frames / enc, "decode_fps": frames / dec,
          "encode_flops": enc_flops, "decode_flops": dec_flops,
          "params": sum(p.numel() for p in model.parameters()),
          "codes_shape": list(codes.shape), "recon_shape": list(recon.shape),
          "layers": [list(l) for l in layers], "threads": torch.get_num_threads(),
          "torch": torch.__version__, "autocast": autocast, "recon_dtype": str(recon.dtype),
          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def bench_soundstream(spec: dict, waves: np.ndarray) -> dict:
  """waves: float32 [B, N] in [-1, 1], 16 kHz mono."""
  import torch
  torch.set_num_threads(spec["threads"])
  mod = _import_submodule("audiolm_pytorch", "soundstream")
  torch.manual_seed(0)
  model = mod.SoundStream(
      channels=spec["channels"], strides=tuple(spec["strides"]),
      channel_mults=tuple(spec["channel_mults"]), codebook_dim=spec["embed_dim"],
      codebook_size=spec["codebook_size"], rq_num_quantizers=spec["num_levels"],
      enc_cycle_dilations=tuple(spec["dilations"]), dec_cycle_dilations=tuple(spec["dilations"]),
      use_local_attn=False, use_lookup_free_quantizer=False, use_finite_scalar_quantizer=False,
      target_sample_hz=spec["sample_rate"]).eval()
  x = torch.from_numpy(waves)
  with torch.inference_mode():
    enc, codes, enc_all = _timed(lambda: model.tokenize(x), spec["repeats"], "median")
    dec, wave, dec_all = _timed(lambda: model.decode_from_codebook_indices(codes),
                                spec["repeats"], "median")
    enc_flops = _flops(lambda: model.tokenize(x))
    dec_flops = _flops(lambda: model.decode_from_codebook_indices(codes))
  codec = sum(p.numel() for n, p in model.named_parameters()
              if n.split(".")[0] in ("encoder", "decoder", "rq"))
  return {"encode_s": enc, "decode_s": dec, "encode_all_s": enc_all, "decode_all_s": dec_all,
          "encode_flops": enc_flops, "decode_flops": dec_flops, "params": codec,
          "codes_shape": list(codes.shape), "wave_shape": list(wave.shape),
          "threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv):
  if len(argv) != 3 or argv[0] not in ("magvit", "soundstream"):
    raise SystemExit("usage: torchref.py magvit|soundstream '<json spec>' input.npy")
  kind, spec, array = argv[0], json.loads(argv[1]), np.load(argv[2])
  result = bench_magvit(spec, array) if kind == "magvit" else bench_soundstream(spec, array)
  print(json.dumps(result))


if __name__ == "__main__":
  main(sys.argv[1:])
