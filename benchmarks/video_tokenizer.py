"""MAGVIT-v2 tokenizer throughput on this machine: encode and decode frames/s, GFLOP/s and the
fraction of the measured matmul peak, for the `small` preset and the paper-scale widths; and
magvit2-pytorch's VideoTokenizer in the same layout on the same clips, with the ratio (issue
target: ours >= 2x its frames/s).

The reference runs in its own venv (`.venv-torchref`, `make .venv-torchref/.installed`; torch 2.11)
as a subprocess (benchmarks/torchref.py): the clips go over as an .npy file, the timings come back
as JSON. Both sides are timed in the same run; the machine's load changes the absolute numbers,
the ratio is the figure to read. Threads: XLA's CPU backend uses all cores; the reference gets
torch.set_num_threads(--threads), default the core count. Where JAX runs on a GPU, the reference
runs on it too (`--torch_device`, default cuda there; cuDNN autotuned, torch's default TF32
convolutions) and the peaks are XLA's float32 (TF32 at JAX's default precision) and bfloat16
`jnp.dot` rates (`benchmarks/gpu_check.sh` runs this on a lent GPU).

"Same layout" (torchref.magvit_layers): same base width, per-level widths, spatial/temporal
compression, 18-bit LFQ (2^18 codes) and 3x3x3 input/output convs; 2 of magvit2-pytorch's residual
units (one 3x3x3 conv + 1x1 conv + squeeze-excite each) per our residual block (two 3x3x3 convs +
group norms). What its API cannot express: group-norm residual blocks (its units are norm-free with
ELU and squeeze-excite), width changes inside strided convs rather than in the next residual block,
separate 2D-space / 1D-time strided convs instead of one strided 3D conv, and no adaptive group
norm in its decoder. Its depth-to-space upsampling convs are 1x1x1 where ours are 3x3x3 (our
reading of MAGVIT-v2), which doubles our decoder's FLOPs; so ours is timed twice, with our
upsampling and with `upsample_kernel=1`, the reference's (--upsample_kernels). Both parameter
counts and FLOPs per call are printed so the match can be judged.

FLOPs (both sides, same convention): 2 per multiply-add of convolutions and matmuls, from our jaxpr
(benchmarks/flop_count.py) and from torch.utils.flop_counter for the reference; GFLOP/s is that over
the measured time, as a fraction of the matmul peak of the same arithmetic (`measure_peaks`,
with `benchmarks/mfu.py`'s timer): float32 operands against the faster of XLA's jitted float32
`jnp.dot` and oneDNN's float32 matmul (oneDNN's kernels outrun XLA's dot on AVX-512 hosts, so
XLA's alone read as 93-171 % "of peak"); bfloat16 conv operands (`onednn_bf16`, a bfloat16 model
by oneDNN, torch's autocast) against oneDNN's bfloat16 matmul where the CPU runs it fast, else the
float32 peak. Each ratio line also gives the ratio ours would read at 100 % of that peak
(`ratio_at_peak`): where ours runs near its peak, the most any faster lowering of the same
multiplies could reach (where a fraction reads above 100 %, the matmul peak understates it).
XLA's own `cost_analysis()` count (all ops it runs itself, incl. norms and activations; not the
convolutions oneDNN runs, custom calls it does not count) is printed for ours too.
Timings: one warm-up call (compilation), then the best of `--repeats` calls (`block_until_ready` on
our side). With `--rounds R` ours and the reference take turns R times and each side keeps its best
round: on a shared machine whose speed drifts by tens of percent from minute to minute, a single
turn each can put the two sides in different conditions. `--dtypes float32,bfloat16` times ours
with bfloat16 activations as well (on XLA:CPU, jaxlib 0.10.2, it was no faster: docs/magvit.md).
Ours runs its convolutions through oneDNN where XLA:CPU has it (vp_jax/nn/onednn_conv.py);
`--cpu_convs onednn,xla` also times it with XLA's own convolutions, the lowering before stop 38,
and `onednn_bf16` with bfloat16 conv operands (float32 sums, TPU's default precision; where the CPU
has AVX512_BF16 or AMX). Its counterpart on the reference side is torch's CPU autocast to bfloat16,
`--torch_dtypes float32,bfloat16`: each of our variants is then compared with both.

  python benchmarks/video_tokenizer.py                      # small (17x64x64) + paper widths
  python benchmarks/video_tokenizer.py --configs paper --frames 5 --size 64
  python benchmarks/video_tokenizer.py --no_torch           # ours only
  python benchmarks/video_tokenizer.py --no_torch --configs small --dtypes float32,bfloat16
  python benchmarks/video_tokenizer.py --configs small --cpu_convs onednn,xla --rounds 3
  python benchmarks/video_tokenizer.py --configs small --cpu_convs onednn,onednn_bf16 \
      --torch_dtypes float32,bfloat16 --upsample_kernels 3 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from vp_jax import cpu_allocator

# The inference malloc settings (vp_jax/cpu_allocator.py), before jax starts its threads: ours is
# timed as launch/eval_video_tokenizer.py runs it. VP_JAX_CPU_ALLOCATOR=off times it with glibc's
# defaults; the reference subprocess always runs with them (benchmarks/cpu_allocator.py measures
# the difference).
KEEP_MAPPED = cpu_allocator.configure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfu import DEFAULT_SIZES, measure_matmul_peak  # noqa: E402
from flop_count import conv_matmul_flops  # noqa: E402
from torchref import run_reference  # noqa: E402

from vp_jax.models.magvit import preset, synthetic  # noqa: E402
from vp_jax.models.magvit.tokenizer import create_tokenizer  # noqa: E402
from vp_jax.nn import onednn_conv  # noqa: E402
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer  # noqa: E402


def _best(fn, repeats):
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best


def _flops(tok, jitted, x) -> float:
  """XLA's cost_analysis FLOPs of one of `tok`'s jitted functions, on x as the tokenizer feeds it
  (padded to and split over the mesh's data ways)."""
  with jax.set_mesh(tok.mesh):
    cost = jitted.lower(tok._params, tok._shard_batch(x)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


# The products the peaks are the best of: mfu.py's squares and one with the convolutions' shape
# (many positions x ~1000 channels), on which oneDNN's kernels ran 7-8 % faster than on squares
# (2-core AVX-512 host: 225 against 210 GFLOP/s float32, 447 against 420 bfloat16).
PEAK_SIZES = (*DEFAULT_SIZES, (16384, 1024, 1024))
# On an accelerator: products large enough to fill it (an H200 needs n >= 4096 to approach its rate).
ACCELERATOR_PEAK_SIZES = (4096, 8192, 16384, (65536, 1024, 1024))


def on_cpu() -> bool:
  """Whether JAX's default backend is the CPU (else the peaks and labels are an accelerator's)."""
  return jax.default_backend() == "cpu"


def measure_peaks(repeats: int = 3) -> dict:
  """{"float32": GFLOP/s, "bfloat16": GFLOP/s or None, "xla_float32": GFLOP/s}: the best of XLA's
  jitted float32 `jnp.dot` ("xla_float32") and, where this XLA:CPU runs oneDNN, oneDNN's float32
  matmul ("float32" is the larger); oneDNN's matmul with bfloat16 operands and float32 sums where
  the CPU runs them fast (`onednn_conv.available("bfloat16")`), else None. Each over PEAK_SIZES.
  On an accelerator: XLA's jitted `jnp.dot` of each dtype (float32 at JAX's default precision,
  which XLA:GPU runs as TF32 on tensor cores) over ACCELERATOR_PEAK_SIZES."""
  if not on_cpu():
    peak = lambda dtype: measure_matmul_peak(ACCELERATOR_PEAK_SIZES, repeats, dtype)  # noqa: E731
    fp32 = peak("float32")
    return {"float32": fp32, "bfloat16": peak("bfloat16"), "xla_float32": fp32}
  peak = lambda **kw: measure_matmul_peak(PEAK_SIZES, repeats=repeats, **kw)  # noqa: E731
  xla = peak()
  fp32 = max(xla, peak(backend="onednn")) if onednn_conv.available() else xla
  bf16 = peak(dtype="bfloat16", backend="onednn") if onednn_conv.available("bfloat16") else None
  return {"float32": fp32, "bfloat16": bf16, "xla_float32": xla}


def operand_arithmetic(dtype: str, cpu_convs: str) -> str:
  """The operand type our convolutions multiply in ("float32" or "bfloat16"), i.e. which peak a
  variant (activation `dtype`, VideoTokenizer `cpu_convs`) is read against: bfloat16 where oneDNN
  runs them with bfloat16 operands (`onednn_bf16`, or a bfloat16 model by oneDNN), else float32
  (XLA's convolutions of a bfloat16 model ran no faster than float32 ones: docs/magvit.md).
  On an accelerator, the activation dtype."""
  if not on_cpu():
    return dtype
  bf16_by_onednn = cpu_convs == "onednn_bf16" or (dtype == "bfloat16" and cpu_convs != "xla")
  return "bfloat16" if bf16_by_onednn and onednn_conv.available("bfloat16") else "float32"


def bench_jax(name: str, clips: np.ndarray, peak: float, upsample_kernel: int = 3,
              dtype: str = "float32", cpu_convs: str = "onednn", xla_cost: bool = True) -> dict:
  """Builds and compiles ours (`cpu_convs`: VideoTokenizer's, "onednn", "onednn_bf16" or "xla");
  `time_jax` then times it (once per round). `peak`: the GFLOP/s its fractions are of.
  `xla_cost`: also XLA's cost_analysis FLOPs (one more compile of each function)."""
  module = create_tokenizer(preset(name, upsample_kernel=upsample_kernel, dtype=dtype))
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
  tok = VideoTokenizer.from_module(module, cpu_convs=cpu_convs)
  x = jnp.asarray(clips)
  ids = tok.encode(x)
  return {"config": name, "dtype": dtype, "params": params, "peak": peak,
          "frames": clips.shape[0] * clips.shape[1], "tok": tok, "x": x, "ids": ids,
          "encode_flops": conv_matmul_flops(tok._encode_fn, tok._params, x),  # the function,
          "decode_flops": conv_matmul_flops(tok._decode_fn, tok._params, ids),  # not its jit
          "encode_xla_flops": _flops(tok, tok._encode, x) if xla_cost else float("nan"),
          "decode_xla_flops": _flops(tok, tok._decode, ids) if xla_cost else float("nan"),
          "encode_s": float("inf"), "decode_s": float("inf")}


def time_jax(r: dict, repeats: int) -> dict:
  """One round: the best of `repeats` encode and decode calls, kept if better than earlier rounds;
  fills in frames/s, GFLOP/s and the fraction of the peak."""
  tok, x, ids = r["tok"], r["x"], r["ids"]
  r["encode_s"] = min(r["encode_s"], _best(lambda: tok.encode(x), repeats))
  r["decode_s"] = min(r["decode_s"], _best(lambda: tok.decode(ids), repeats))
  for op in ("encode", "decode"):
    r[f"{op}_fps"] = r["frames"] / r[f"{op}_s"]
    r[f"{op}_gflops"] = r[f"{op}_flops"] / r[f"{op}_s"] / 1e9
    r[f"{op}_peak_frac"] = r[f"{op}_gflops"] / r["peak"]
  return r


def _key(upsample_kernel: int, dtype: str, cpu_convs: str = "onednn") -> str:
  """results[config] key of one of our variants: "jax_up3", "jax_up3_bfloat16" off float32,
  "jax_up3_xlaconv" with XLA's own convolutions, "jax_up3_bf16conv" with bfloat16 conv operands."""
  return (f"jax_up{upsample_kernel}" + ("" if dtype == "float32" else f"_{dtype}")
          + {"onednn": "", "xla": "_xlaconv", "onednn_bf16": "_bf16conv"}[cpu_convs])


def bench_torch(name: str, clips: np.ndarray, repeats: int, threads: int,
                python: str | None, dtype: str = "float32", device: str = "cpu") -> dict | str:
  """magvit2-pytorch's VideoTokenizer in our preset's layout (torchref.magvit_layers), run in the
  reference venv on the same clips (`dtype` "bfloat16": under torch's autocast) on `device`
  ("cpu" or "cuda"); a string when it cannot run."""
  cfg = preset(name)
  spec = {"filters": cfg.filters, "channel_multipliers": list(cfg.channel_multipliers),
          "num_res_blocks": cfg.num_res_blocks,
          "temporal_downsample": list(cfg.temporal_downsample),
          "embedding_dim": cfg.embedding_dim, "repeats": repeats, "threads": threads,
          "autocast": None if dtype == "float32" else dtype, "device": device}
  return run_reference("magvit", spec, clips, python)


def _keep_faster(best: dict | None, new: dict | str) -> dict | str:
  """The reference's figures over rounds: per operation, the faster round's."""
  if best is None or isinstance(new, str):
    return new
  out = dict(best)
  for op in ("encode", "decode"):
    if new[f"{op}_s"] < best[f"{op}_s"]:
      out[f"{op}_s"], out[f"{op}_fps"] = new[f"{op}_s"], new[f"{op}_fps"]
  return out


def ratio_at_peak(ours: dict, ref: dict, op: str) -> float:
  """The frames/s ratio ours would read against `ref` (the reference's figures) if `op` ("encode"
  or "decode") ran its FLOPs at 100 % of our peak, i.e. its measured ratio over its fraction of
  that peak. Where ours runs below the peak, this bounds what any faster lowering of the same
  multiplies could reach; past it only fewer multiplies help. The peak is a matmul rate, so where
  convolutions outrun it (oneDNN's bfloat16 ones on AMX: fractions above 100 %) it bounds nothing."""
  return ours[f"{op}_fps"] / ours[f"{op}_peak_frac"] / ref[f"{op}_fps"]


def _conv_label(cpu_convs: str) -> str:
  if not on_cpu():
    return f"XLA:{jax.default_backend().upper()}'s convolutions"
  if cpu_convs == "xla":
    return "XLA's convolutions"
  label = "oneDNN convolutions" if onednn_conv.available() else "XLA's convolutions (no oneDNN)"
  if cpu_convs == "onednn_bf16":
    return ("oneDNN convolutions, bfloat16 operands" if onednn_conv.available("bfloat16")
            else f"{label}, float32 operands (no fast bfloat16 here)")
  return label


def default_torch_device() -> str:
  """The reference's device when --torch_device is not given: the GPU where JAX runs on one."""
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


def _torch_key(dtype: str) -> str:
  """results[config] key of the reference's run: "torch" (float32), "torch_bfloat16" (autocast)."""
  return "torch" if dtype == "float32" else f"torch_{dtype}"


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--configs", default="small,paper")
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--rounds", type=int, default=1,
                 help="ours and the reference take turns this many times; each side's best counts")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                 help="torch.set_num_threads for the reference (XLA's CPU backend uses all cores)")
  p.add_argument("--torch_python", default=None,
                 help="reference venv interpreter (default $TORCHREF_PYTHON or .venv-torchref)")
  p.add_argument("--no_torch", action="store_true", help="skip the magvit2-pytorch comparison")
  p.add_argument("--upsample_kernels", default="3,1",
                 help="MagvitConfig.upsample_kernel values to time ours with (1 = the reference's)")
  p.add_argument("--dtypes", default="float32",
                 help="MagvitConfig.dtype values (activations) to time ours with (the "
                      "reference's float32 run stays float32)")
  p.add_argument("--cpu_convs", default="onednn",
                 help="our convolutions on CPU (VideoTokenizer cpu_convs): onednn (by oneDNN "
                      "where XLA:CPU has it), onednn_bf16 (bfloat16 operands) and/or xla "
                      "(XLA's own)")
  p.add_argument("--torch_dtypes", default="float32",
                 help="the reference's runs: float32 and/or bfloat16 (torch autocast)")
  p.add_argument("--torch_device", default=None, choices=("cpu", "cuda"),
                 help="the reference's device: cpu or cuda (default: cuda where JAX runs on a GPU)")
  p.add_argument("--no_xla_cost", action="store_true",
                 help="skip XLA's cost_analysis FLOPs (saves one compile per function)")
  args = p.parse_args(argv)
  torch_device = args.torch_device or default_torch_device()
  if args.rounds < 1 or args.repeats < 1:
    p.error(f"--rounds {args.rounds} / --repeats {args.repeats}: both must be >= 1.")
  torch_dtypes = args.torch_dtypes.split(",")
  if not set(torch_dtypes) <= {"float32", "bfloat16"}:
    p.error(f"--torch_dtypes {args.torch_dtypes}: float32 and/or bfloat16.")
  peaks = measure_peaks(repeats=3)
  bf16_peak = (f"{peaks['bfloat16']:.1f} GFLOP/s ({'oneDNN' if on_cpu() else 'XLA'})"
               if peaks["bfloat16"]
               else "not fast here (read against float32's)")
  print(f"matmul peaks: float32 {peaks['float32']:.1f} GFLOP/s (XLA's jnp.dot "
        f"{peaks['xla_float32']:.1f}), bfloat16 operands {bf16_peak}; {jax.device_count()} "
        f"device(s), {jax.devices()[0].platform}; load average {os.getloadavg()[0]:.2f}; best of "
        f"{args.repeats} after a warm-up, {args.rounds} round(s); ours with "
        f"{'the keep-mapped' if KEEP_MAPPED else 'glibc default'} malloc settings",
        flush=True)
  clips = synthetic.moving_shapes_batch(0, 0, args.batch, args.frames, args.size, args.size)
  results = {}
  kernels = [int(k) for k in args.upsample_kernels.split(",")]
  variants = [(k, d, c) for k in kernels for d in args.dtypes.split(",")
              for c in args.cpu_convs.split(",")]
  shape = f"{args.batch}x{args.frames}x{args.size}x{args.size}"
  for name in args.configs.split(","):
    ours = {v: bench_jax(name, clips, peaks[operand_arithmetic(v[1], v[2])], *v,
                         xla_cost=not args.no_xla_cost)
            for v in variants}
    refs = dict.fromkeys(torch_dtypes)
    for _ in range(args.rounds):     # ours and the reference take turns; each keeps its best
      for r in ours.values():
        time_jax(r, args.repeats)
      if not args.no_torch:
        for td in torch_dtypes:
          refs[td] = _keep_faster(refs[td], bench_torch(name, clips, args.repeats, args.threads,
                                                        args.torch_python, td, torch_device))
        if any(isinstance(t, str) for t in refs.values()):
          break
    results[name] = {}
    for (kernel, dtype, convs), r in ours.items():
      r = {k: v for k, v in r.items() if k not in ("tok", "x", "ids")}
      results[name][_key(kernel, dtype, convs)] = r
      arith = operand_arithmetic(dtype, convs)
      print(f"{name} {shape}, {kernel}x{kernel}x{kernel} upsampling convs, {dtype} activations, "
            f"{_conv_label(convs)}:\n"
            f"  vp_jax ({r['params'] / 1e6:.2f}M params): encode {r['encode_fps']:.2f} frames/s "
            f"({r['encode_flops'] / 1e9:.1f} GFLOP, {r['encode_gflops']:.1f} GFLOP/s, "
            f"{100 * r['encode_peak_frac']:.0f}% of {arith} peak); decode "
            f"{r['decode_fps']:.2f} frames/s ({r['decode_flops'] / 1e9:.1f} GFLOP, "
            f"{r['decode_gflops']:.1f} GFLOP/s, {100 * r['decode_peak_frac']:.0f}% of {arith} "
            f"peak); XLA cost_analysis: " + (
                "not computed (--no_xla_cost)" if args.no_xla_cost else
                f"{r['encode_xla_flops'] / 1e9:.1f} / {r['decode_xla_flops'] / 1e9:.1f} GFLOP"),
            flush=True)
    if args.no_torch:
      continue
    for td, t in refs.items():
      what = "magvit2-pytorch" + ("" if td == "float32" else f" ({td} autocast)")
      if isinstance(t, str):
        print(f"  {what}: unavailable ({t})", flush=True)
        continue
      results[name][_torch_key(td)] = t
      enc_g, dec_g = (t["encode_flops"] / t["encode_s"] / 1e9,
                      t["decode_flops"] / t["decode_s"] / 1e9)
      # torch's CPU convolutions are oneDNN's too; autocast runs them with bfloat16 operands.
      arith = "bfloat16" if td == "bfloat16" and peaks["bfloat16"] else "float32"
      peak = peaks[arith]
      where = (f"{t['threads']} threads" if t.get("device", "cpu") == "cpu"
               else f"on {t['device']}, cuDNN autotuned")
      print(f"  {what} {t['torch'].split('+')[0]}, {where} "
            f"({t['params'] / 1e6:.2f}M params, 1x1x1 upsampling convs): encode "
            f"{t['encode_fps']:.2f} frames/s ({t['encode_flops'] / 1e9:.1f} GFLOP, {enc_g:.1f} "
            f"GFLOP/s, {100 * enc_g / peak:.0f}% of {arith} peak); decode "
            f"{t['decode_fps']:.2f} frames/s ({t['decode_flops'] / 1e9:.1f} GFLOP, "
            f"{dec_g:.1f} GFLOP/s, {100 * dec_g / peak:.0f}% of {arith} peak)", flush=True)
      for kernel, dtype, convs in variants:
        r = results[name][_key(kernel, dtype, convs)]
        print(f"  ratio vp_jax ({kernel}x{kernel}x{kernel} upsampling, {dtype}, "
              f"{_conv_label(convs)}) / {what} frames/s: "
              f"encode {r['encode_fps'] / t['encode_fps']:.2f}x, decode "
              f"{r['decode_fps'] / t['decode_fps']:.2f}x (target >= 2x; at 100% of our "
              f"{operand_arithmetic(dtype, convs)} peak {ratio_at_peak(r, t, 'encode'):.2f}x / "
              f"{ratio_at_peak(r, t, 'decode'):.2f}x)", flush=True)
  return results


if __name__ == "__main__":
  main()
