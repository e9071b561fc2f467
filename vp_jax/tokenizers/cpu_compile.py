"""XLA:CPU compile options for the video tokenizer's encode and decode.

Why: on XLA:CPU (jaxlib 0.10.2) convolutions go to YNNPACK by default, which at MAGVIT's shapes
runs them at ~35% of the machine's matmul peak; with YNNPACK off for the function, XLA's own
(Eigen) convolutions run at 60-70%. Measured (`benchmarks/video_tokenizer.py`, small preset,
1x17x64x64, quiet 2-core CPU): encode 57 -> 90-103 frames/s, decode 25 -> 37-40 frames/s.
It is an option of the jitted function, not of the process: in *training* the YNNPACK path was the
faster one (a MAGVIT small train step at 8x9x32x32: 3.4 s with it, 4.1 s without), the prefix LM's
matmuls are faster with it too, and SoundStream's 1D convolutions gained nothing (decode slower).

Since stop 38 MAGVIT's convolutions in these functions run by oneDNN instead where XLA:CPU has it
(`vp_jax.nn.onednn_conv`; the option above then covers the rest): small preset, 1x17x64x64, in one
process: encode 167 -> 102 ms, decode 412 -> 298 ms; paper widths at 5x64x64: 2.72 -> 1.52 s and
3.64 -> 2.19 s.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from vp_jax.nn import onednn_conv

# An empty list of YNNPACK fusion types: no YNNPACK fusions in the compiled function.
CONV_INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# How `conv_inference_jit` runs MAGVIT's convolutions on CPU (its `convs`).
CONVS = ("onednn", "onednn_bf16", "xla")


def _all_cpu(mesh: jax.sharding.Mesh) -> bool:
  """Whether every device of `mesh` is a CPU (where MAGVIT's CPU convolution lowering applies)."""
  return all(d.platform == "cpu" for d in mesh.devices.flat)


def conv_inference_jit(fn: Callable, mesh: jax.sharding.Mesh, convs: str = "onednn",
                       batch_axes: tuple[str, ...] | None = None) -> Callable:
  """`jax.jit(fn)`, compiled with CONV_INFERENCE_OPTIONS when every device of `mesh` is a CPU
  and then traced with MAGVIT's convolutions as `convs` says: "onednn" (run by oneDNN where
  XLA:CPU has it, `onednn_conv.use()`), "onednn_bf16" (the same with bfloat16 operands where the
  CPU runs them fast, `use(operands="bfloat16")`) or "xla" (XLA's own); other backends get plain
  `jax.jit`.

  With oneDNN and `batch_axes`, `fn(params, x)` (x batch-major, the batch split over those mesh
  axes, params replicated, the result split like x; every sample computed on its own) runs under
  `shard_map`: XLA's SPMD partitioner does not know the oneDNN custom call and would gather the
  whole batch onto every device before it (measured: a 4-device mesh's encode ran each conv on all
  4 clips), while per shard each device convolves its own clips."""
  if convs not in CONVS:
    raise ValueError(f"conv_inference_jit: convs={convs!r}; use one of {CONVS}")
  if not _all_cpu(mesh):
    return jax.jit(fn)
  onednn = convs != "xla"
  operands = "bfloat16" if convs == "onednn_bf16" else "float32"
  if onednn and batch_axes and mesh.size > 1:
    batch = PartitionSpec(batch_axes)
    # check_vma=False: the oneDNN primitive's abstract eval does not track which manual axes a
    # value varies over, so the checker would see its output as replicated and other branches'
    # as varying; nothing here communicates across the batch shards.
    fn = jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(), batch), out_specs=batch,
                       check_vma=False)

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with onednn_conv.use(onednn, operands):
      return fn(*args, **kwargs)
  return jax.jit(traced, compiler_options=CONV_INFERENCE_OPTIONS)


def conv_operand_params(params, mesh: jax.sharding.Mesh, convs: str):
  """`params` for a function compiled by `conv_inference_jit(..., mesh, convs)`: where that runs
  its convolutions with bfloat16 operands (convs="onednn_bf16", every device of `mesh` a CPU, and
  `onednn_conv.available("bfloat16")`), every conv kernel (a 5-D leaf named "kernel") rounded to
  bfloat16 once here instead of on every call; the same result, since the traced function's own
  rounding of a bfloat16 kernel is exact (XLA drops the bfloat16 -> float32 -> bfloat16 pair).
  The small decode on an AMX CPU spent ~3 of its ~47 ms in those casts (docs/magvit.md "Speed").
  Elsewhere `params` unchanged."""
  if convs != "onednn_bf16" or not _all_cpu(mesh) or not onednn_conv.available("bfloat16"):
    return params

  def cast(path, leaf):
    last = path[-1] if path else None
    is_kernel = getattr(last, "key", None) == "kernel" and getattr(leaf, "ndim", 0) == 5
    return leaf.astype(jnp.bfloat16) if is_kernel else leaf
  return jax.tree_util.tree_map_with_path(cast, params)
