"""Channels-last convolutions run by oneDNN inside XLA:CPU programs.

Why: XLA:CPU's own convolutions (Eigen, or YNNPACK) ran MAGVIT's 3x3x3 convolutions at 70-190
GFLOP/s on the 2-core AVX-512 host where oneDNN, the library PyTorch's CPU convolutions use, ran
the same ones at 220-230 (docs/magvit.md "Speed", stop 38: 17x64x64, 32 -> 32 channels: 35.9 ->
17.3 ms; 64 -> 32: 98.1 -> 35.3 ms; 5x64x64, 128 -> 128: 142 -> 80 ms; outputs within 3e-5).

How: jaxlib (0.10.2) links oneDNN into XLA:CPU and its thunk runtime runs a custom call named
`__onednn$convolution` whose backend config is a `OneDnnConvolutionConfig`, but the pass that
would rewrite convolutions into that call is not part of jaxlib's build. `onednn_conv` binds a
primitive whose CPU lowering emits that custom call directly (with `jax._src`'s `custom_call`, an
internal helper); on other platforms it lowers to `lax.conv_general_dilated`. The config follows
XLA's `onednn_convolution.cc` at jaxlib 0.10.2: spatial dimensions 0-based, strides and pads as they
are, window dilations stored + 1 (0 = dense in oneDNN).

Since that is an internal interface of one jaxlib, `available()` compiles and runs a small strided,
asymmetrically padded 3D convolution once per process and compares it with lax's; any failure or
mismatch (another jaxlib, an XLA:CPU without oneDNN such as aarch64 builds) makes it False and
callers keep XLA's convolutions. `VP_JAX_ONEDNN_CONV=off` turns it off for the process. There is
no differentiation rule: callers give the forward pass a `custom_vjp` with XLA's backward.

Operands are float32 or bfloat16; the result float32 or bfloat16 (`out_dtype`). bfloat16 operands
with a float32 result are what a TPU computes for a float32 conv at JAX's default precision (one
bfloat16 pass, float32 accumulation): on CPUs with AVX512_BF16 or AMX, oneDNN runs them at twice
float32's rate (stop 39, 17x64x64, 64 -> 32 channels: 38.4 -> 19.3 ms, the operand rounding
included; the sums equal float32 sums of the rounded operands within 1.5e-6 relative).
`available("bfloat16")` also requires one of those CPU features: elsewhere oneDNN would emulate
bfloat16, slower than float32.

Where: only functions traced inside `with use():`, which `vp_jax.tokenizers.cpu_compile` sets for
the video tokenizer's encode and decode. Training keeps XLA's convolutions: a MAGVIT train step
was no faster with oneDNN's forward (the backward dominates; 7.3-8.4 against 7.5-13.3 s per
2x17x64x64 generator step), and XLA cannot serialize a program holding the custom call (JAX's
persistent compilation cache warns "std::bad_alloc" and skips it), which the tests rely on.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import threading
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir as _mlir
from jax.extend.core import Primitive
from jax.interpreters import mlir

ENV_VAR = "VP_JAX_ONEDNN_CONV"
Padding = Sequence[tuple[int, int]]
DTYPES = ("float32", "bfloat16")

onednn_conv_p = Primitive("onednn_conv")


def _output_shape(x_shape, kernel_shape, strides, padding):
  spatial = [(x_shape[1 + i] + lo + hi - kernel_shape[i]) // s + 1
             for i, (s, (lo, hi)) in enumerate(zip(strides, padding))]
  return (x_shape[0], *spatial, kernel_shape[-1])


def _abstract_eval(x, kernel, *, strides, padding, out_dtype):
  return jax.core.ShapedArray(_output_shape(x.shape, kernel.shape, strides, padding),
                              jnp.dtype(out_dtype))


def _reference(x, kernel, *, strides, padding, out_dtype=None):
  nd = len(strides)
  spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
          3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
  out_dtype = jnp.dtype(out_dtype or x.dtype)
  y = jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=spec,
                                   preferred_element_type=out_dtype)
  return y.astype(out_dtype)


def backend_config(nd: int, kernel_spatial: Sequence[int], strides: Sequence[int],
                   padding: Padding) -> str:
  """The custom call's backend config (XLA's `BackendConfig` proto as JSON) for an `nd`-D conv
  with x [N, *spatial, Cin], kernel [*kernel_spatial, Cin, Cout] and y [N, *spatial', Cout]."""
  rank = nd + 2
  data = {"batch_dim": 0, "feature_dim": rank - 1, "spatial_dims": list(range(1, nd + 1))}
  return json.dumps({"onednn_conv_config": {
      "dims": rank,
      "input": {"dims": rank, "data": data},
      "kernel": {"dims": rank, "filter": {"input_feature_dim": nd, "output_feature_dim": nd + 1,
                                          "spatial_dims": list(range(nd))}},
      "output": {"dims": rank, "data": data},
      "window": {"size": [int(k) for k in kernel_spatial],
                 "pad_left": [int(lo) for lo, _ in padding],
                 "pad_right": [int(hi) for _, hi in padding],
                 "strides": [int(s) for s in strides],
                 "window_dilations": [1] * nd},     # dilation 1 = oneDNN's 0, stored + 1
      "feature_groups": 1}})


def _cpu_lowering(ctx, x, kernel, *, strides, padding, out_dtype):
  del out_dtype                                  # the result type (ctx.avals_out) carries it
  nd = len(strides)
  row_major = list(range(nd + 1, -1, -1))
  op = _mlir.custom_call(
      "__onednn$convolution",
      result_types=[_mlir.aval_to_ir_type(ctx.module_context, ctx.avals_out[0])],
      operands=[x, kernel],
      backend_config=backend_config(nd, ctx.avals_in[1].shape[:nd], strides, padding),
      api_version=1, operand_layouts=[row_major, row_major], result_layouts=[row_major])
  return op.results


onednn_conv_p.def_abstract_eval(_abstract_eval)
onednn_conv_p.def_impl(functools.partial(jax.jit, static_argnames=("strides", "padding",
                                                                  "out_dtype"))(
    lambda x, kernel, *, strides, padding, out_dtype: onednn_conv_p.bind(
        x, kernel, strides=strides, padding=padding, out_dtype=out_dtype)))
mlir.register_lowering(onednn_conv_p, mlir.lower_fun(_reference, multiple_results=False))
mlir.register_lowering(onednn_conv_p, _cpu_lowering, platform="cpu")


def onednn_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
                out_dtype=None) -> jax.Array:
  """x [N, *spatial, Cin] (1-3 spatial dims), kernel [*k, Cin, Cout], explicit (lo, hi) padding
  per spatial dim -> [N, *spatial', Cout] in `out_dtype` (default x's); what
  `lax.conv_general_dilated(..., preferred_element_type=out_dtype)` computes, run by oneDNN on CPU
  (call `available(x.dtype)` first: this does not check). x and kernel: both float32 or both
  bfloat16."""
  nd = x.ndim - 2
  if not 1 <= nd <= 3 or kernel.ndim != nd + 2 or len(strides) != nd or len(padding) != nd:
    raise ValueError(f"onednn_conv: x {x.shape}, kernel {kernel.shape}, strides {strides} and "
                     f"padding {padding} do not describe a 1-3D channels-last convolution")
  out_dtype = jnp.dtype(out_dtype or x.dtype).name
  if x.dtype != kernel.dtype or x.dtype.name not in DTYPES or out_dtype not in DTYPES:
    raise ValueError(f"onednn_conv: x and kernel both float32 or both bfloat16, the result one of "
                     f"those; got {x.dtype} / {kernel.dtype} -> {out_dtype}")
  return onednn_conv_p.bind(x, kernel, strides=tuple(int(s) for s in strides),
                            padding=tuple((int(lo), int(hi)) for lo, hi in padding),
                            out_dtype=out_dtype)


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_fast_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
  """Whether this (x86 Linux) CPU has an instruction oneDNN runs bfloat16 convolutions with at
  about twice float32's rate (BF16_CPU_FLAGS); False where that cannot be read."""
  try:
    with open(cpuinfo) as f:
      flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
  except OSError:
    return False
  return any(flag in flags for flag in BF16_CPU_FLAGS)


def _operand_name(operands, caller: str) -> str:
  """The dtype name of `operands` ("float32" or "bfloat16"); a ValueError naming `caller` else."""
  name = jnp.dtype(operands).name
  if name not in DTYPES:
    raise ValueError(f"onednn_conv.{caller}: operands {name!r}; use one of {DTYPES}")
  return name


def available(operands: str = "float32") -> bool:
  """Whether this process's XLA:CPU runs `onednn_conv` with these operands ("float32" or
  "bfloat16", float32 result) and gets lax's result (checked once per dtype); "bfloat16" also
  needs `cpu_has_fast_bfloat16()`."""
  return _available(_operand_name(operands, "available"))


@functools.lru_cache(maxsize=None)
def _available(operands: str) -> bool:
  if os.environ.get(ENV_VAR, "auto").strip().lower() in ("off", "0", "false", "no"):
    return False
  if operands == "bfloat16" and not cpu_has_fast_bfloat16():
    logging.getLogger(__name__).warning(
        "oneDNN bfloat16 convolutions not used: this CPU has none of %s (oneDNN would emulate "
        "them, slower than float32)", BF16_CPU_FLAGS)
    return False
  # In a thread of its own: the first call may come while a caller traces a function under a mesh
  # of several devices, and JAX's trace and mesh contexts are per thread.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_check, operands).result()


available.cache_clear = _available.cache_clear     # forget the checks (tests)


def _check(operands: str) -> bool:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 6, 5, 4), np.float32)
  kernel = rng.standard_normal((3, 3, 3, 4, 5), np.float32)
  strides, padding = (1, 2, 2), ((2, 0), (0, 1), (1, 1))
  try:
    cpu = jax.local_devices(backend="cpu")[0]   # this process's own (jax.devices() is global)
    xs, ks = (jax.device_put(v, cpu).astype(operands) for v in (x, kernel))
    got = np.asarray(jax.jit(lambda a, k: onednn_conv(a, k, strides, padding, "float32"))(xs, ks))
    # float32 sums of the same (rounded) operands
    want = np.asarray(_reference(xs.astype(jnp.float32), ks.astype(jnp.float32), strides=strides,
                                 padding=padding))
  except Exception as e:  # noqa: BLE001 - any failure means: not usable here
    logging.getLogger(__name__).warning(
        "oneDNN %s convolutions unavailable, XLA's are used: %s", operands, e)
    return False
  return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))


_setting = threading.local()


def operand_dtype() -> str | None:
  """The operand dtype a float32 convolution traced now should give `onednn_conv`, or None for
  XLA's convolution: the innermost `use()` decides; "bfloat16" where asked for and available,
  else "float32" where available, else None. Outside any block: None."""
  stack = getattr(_setting, "stack", None)
  if not stack or stack[-1] is None:
    return None
  if stack[-1] == "bfloat16" and available("bfloat16"):
    return "bfloat16"
  return "float32" if available("float32") else None


@contextlib.contextmanager
def use(on: bool = True, operands: str = "float32") -> Iterator[None]:
  """Functions traced inside this block (this thread) take oneDNN's convolutions where `on` and
  available, XLA's otherwise. `operands="bfloat16"`: float32 convolutions round their operands to
  bfloat16 and sum in float32 (TPU's default precision) where `available("bfloat16")`, else they
  keep float32 operands. Outside any block: XLA's."""
  operands = _operand_name(operands, "use")
  stack = getattr(_setting, "stack", None)
  if stack is None:
    stack = _setting.stack = []
  stack.append(operands if on else None)
  try:
    yield
  finally:
    stack.pop()
