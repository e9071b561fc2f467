"""Causal 3D convolution: the building block that keeps the tokenizer causal in time.

Time is padded on the past side only (kernel_t - 1 zero frames before the first frame), so output
frame t sees input frames <= t; with temporal stride 2 the output frame j sees frames <= 2j, which
maps T = 1 + 2k frames to 1 + k. Zero padding (not replicate) makes a 1-frame kernel placed in the
last temporal slice of a 3-frame kernel compute exactly the 2D convolution: that is inflation.
Space uses TF "SAME" padding. Layout is channels-last: [B, T, H, W, C].

On CPU the convolution runs as a 2D convolution over B x T' frames whose input channels are the kt
time taps concatenated (`conv3d_as_2d`): XLA's CPU backend has a fast 2D convolution but a 3D one
that measured 2-4.5x slower at this model's shapes (benchmarks/video_tokenizer.py; the kt-fold copy
of the input is the price). Its kernel gradient is computed as per-tap matmuls (`vp_jax.nn.conv2d`):
XLA:CPU's own kernel-gradient convolution took over half of a train step. Other platforms keep the
native 3D convolution (`lax.platform_dependent` picks at lowering time). All compute the same
function.

A convolution with few output channels (the decoder's conv to 3 RGB channels) runs on CPU as one
matmul per input position against every tap at once, [Cin] x [kt*kh*kw*Cout], followed by a sum of
the kt*kh*kw shifted slices of that product (`conv3d_tap_products`). XLA:CPU's convolution with 3
output channels ran at 16-25 GFLOP/s at the decoder's output shapes; the matmul form at 75-190
(17x64x64, 32 -> 3 channels: 14-16 -> 4-5 ms; 17x128x128, 128 -> 3: 356 -> 31 ms; docs/magvit.md
"Speed"). It pays only where Cin is several times Cout (`TAP_PRODUCTS_MIN_CIN_PER_COUT`): at
32 -> 16 or 8 -> 8 channels it was slower. Its backward pass is `conv3d_as_2d`'s.

Traced inside `vp_jax.nn.onednn_conv.use()` (the video tokenizer's encode and decode,
`vp_jax.tokenizers.cpu_compile`), the other float32 convolutions run as one native 3D convolution
by oneDNN inside the XLA:CPU program (`conv3d_onednn`): 1.3-2.8x faster than `conv3d_as_2d` at
this model's shapes (17x64x64, 64 -> 32 channels: 98 -> 35 ms). Training keeps XLA's (see that
module for why); its backward pass would be `conv3d_as_2d`'s too. Inside
`use(operands="bfloat16")` they round their operands to bfloat16 and sum in float32, as a TPU does
at JAX's default precision: twice as fast again where the CPU has AVX512_BF16 or AMX (35 -> 19 ms);
the narrow conv to RGB then goes to oneDNN too (`cpu_lowering`).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.nn import hash_random, onednn_conv
from vp_jax.nn.conv2d import conv2d


def variance_scaling_uniform(scale: float = 1.0, fan_in_axes: int = -1):
  """He/LeCun-style init: uniform with variance scale / fan_in, fan_in = prod(shape[:-1]), drawn
  from the counter hash `vp_jax.nn.hash_random.uniform` (jax.random's generators compile slowly
  per tensor on XLA:CPU, and a tokenizer has hundreds of tensors)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = max(math.prod(shape[:fan_in_axes]), 1)
    limit = math.sqrt(3.0 * scale / fan_in)
    return ((2.0 * hash_random.uniform(key, shape) - 1.0) * limit).astype(dtype)
  return init


conv_init = variance_scaling_uniform(1.0)


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def conv3d_native(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                  padding_hw: Sequence[tuple[int, int]]) -> jax.Array:
  """Causal 3D conv: x [B, T, H, W, Cin], kernel [kt, kh, kw, Cin, Cout] -> [B, T', H', W', Cout]."""
  kt = kernel.shape[0]
  return jax.lax.conv_general_dilated(
      x, kernel, tuple(strides), [(kt - 1, 0), *padding_hw],
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def conv3d_as_2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                 padding_hw: Sequence[tuple[int, int]]) -> jax.Array:
  """The same causal 3D conv as a 2D conv over B x T' frames of kt concatenated time taps."""
  kt, kh, kw, cin, cout = kernel.shape
  st, sh, sw = strides
  b, t = x.shape[:2]
  t_out = (t - 1) // st + 1
  xp = jnp.pad(x, ((0, 0), (kt - 1, 0), (0, 0), (0, 0), (0, 0)))
  taps = [xp[:, i:i + st * (t_out - 1) + 1:st] for i in range(kt)]       # kt x [B, T', H, W, Cin]
  xc = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)            # [B, T', H, W, kt*Cin]
  xc = xc.reshape(b * t_out, *xc.shape[2:])
  k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)   # tap-major channels
  y = conv2d(xc, k2, (sh, sw), padding_hw)
  return y.reshape(b, t_out, *y.shape[1:])


def conv3d_tap_products(x: jax.Array, kernel: jax.Array,
                        padding_hw: Sequence[tuple[int, int]]) -> jax.Array:
  """The same causal 3D conv (stride 1) as x @ all taps' kernels, then a sum of shifted slices:
  y[t, i, j] = sum over taps (a, b, c) of p[t + a - (kt-1), i + b - top, j + c - left, (a, b, c)]
  with p = x @ kernel, zero outside the clip. Its gradient is `conv3d_as_2d`'s."""
  return _with_as_2d_gradient(_tap_products_forward, x, kernel, (1, 1, 1), _hashable(padding_hw))


def conv3d_onednn(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                  padding_hw: Sequence[tuple[int, int]], operands: str = "float32") -> jax.Array:
  """The same causal 3D conv, run by oneDNN inside the XLA:CPU program (`vp_jax.nn.onednn_conv`;
  only where `onednn_conv.available(operands)`), its result in x's dtype. `operands="bfloat16"`
  rounds x and the kernel to bfloat16 first (float32 sums: TPU's default precision). Its gradient
  is `conv3d_as_2d`'s."""
  forward = {"float32": _onednn_forward, "bfloat16": _onednn_bf16_forward}[operands]
  return _with_as_2d_gradient(forward, x, kernel, tuple(int(s) for s in strides),
                              _hashable(padding_hw))


def _onednn_forward(x, kernel, strides, padding_hw):
  return onednn_conv.onednn_conv(x, kernel, strides, [(kernel.shape[0] - 1, 0), *padding_hw])


def _onednn_bf16_forward(x, kernel, strides, padding_hw):
  return onednn_conv.onednn_conv(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), strides,
                                 [(kernel.shape[0] - 1, 0), *padding_hw], out_dtype=x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _with_as_2d_gradient(forward, x, kernel, strides, padding_hw):
  """forward(x, kernel, strides, padding_hw), differentiated as `conv3d_as_2d` (same function)."""
  return forward(x, kernel, strides, padding_hw)


def _with_as_2d_gradient_fwd(forward, x, kernel, strides, padding_hw):
  return forward(x, kernel, strides, padding_hw), (x, kernel)


def _with_as_2d_gradient_bwd(forward, strides, padding_hw, residuals, dy):
  # The oneDNN call has no differentiation rule, and XLA's own gradient of the tap products' slice
  # sum ran ~60x slower than the forward (a 2x17x64x64, 32 -> 3 conv: 798 ms forward + backward,
  # against 87 ms for `conv3d_as_2d`), so both take the 2D-conv form's backward.
  del forward
  x, kernel = residuals
  _, vjp = jax.vjp(lambda a, k: conv3d_as_2d(a, k, strides, padding_hw), x, kernel)
  return vjp(dy)


_with_as_2d_gradient.defvjp(_with_as_2d_gradient_fwd, _with_as_2d_gradient_bwd)


def _hashable(padding_hw):
  return tuple((int(lo), int(hi)) for lo, hi in padding_hw)


def _tap_products_forward(x, kernel, strides, padding_hw):
  del strides  # always (1, 1, 1)
  kt, kh, kw, cin, cout = kernel.shape
  b, t, h, w, _ = x.shape
  (top, bottom), (left, right) = padding_hw
  k = kernel.transpose(3, 0, 1, 2, 4).reshape(cin, kt * kh * kw * cout)
  p = jnp.einsum("bthwc,cn->bthwn", x, k).reshape(b, t, h, w, kt, kh, kw, cout)
  p = jnp.pad(p, ((0, 0), (kt - 1, 0), (top, bottom), (left, right)) + ((0, 0),) * 4)
  h_out, w_out = h + top + bottom - kh + 1, w + left + right - kw + 1
  y = None
  for a in range(kt):
    for i in range(kh):
      for j in range(kw):
        tap = p[:, a:a + t, i:i + h_out, j:j + w_out, a, i, j]             # [B, T, H', W', Cout]
        y = tap if y is None else y + tap
  return y


# conv3d_tap_products is used (on CPU) when Cin >= this many times Cout and the kernel has several
# taps: measured faster at 32 -> 3, 32 -> 8, 128 -> 3 channels, slower at 32 -> 16 and 8 -> 8.
TAP_PRODUCTS_MIN_CIN_PER_COUT = 4


def uses_tap_products(kernel_shape: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether a conv with this [kt, kh, kw, Cin, Cout] kernel and these strides is narrow enough for
  `conv3d_tap_products` (narrow output, stride 1, more than one tap): its CPU lowering with
  float32 operands (`cpu_lowering`)."""
  kt, kh, kw, cin, cout = kernel_shape
  return (tuple(strides) == (1, 1, 1) and kt * kh * kw > 1
          and cin >= TAP_PRODUCTS_MIN_CIN_PER_COUT * cout)


def cpu_lowering(kernel_shape: Sequence[int], strides: Sequence[int], dtype) -> str:
  """How a conv with this [kt, kh, kw, Cin, Cout] kernel, these strides and this compute dtype runs
  on CPU. Traced inside `onednn_conv.use()` where this process's XLA:CPU runs oneDNN convolutions:
  "onednn_bf16" (bfloat16 operands: a bfloat16 model, or a float32 one inside
  `use(operands="bfloat16")`), else "tap_products" where `uses_tap_products` (float32 operands),
  else "onednn" (float32 operands). Outside it: "tap_products" where `uses_tap_products`, else
  "as_2d" (XLA's convolution).

  With bfloat16 operands the narrow conv goes to oneDNN too: on a CPU with AMX-BF16 the
  small decoder's conv to RGB (17x64x64, 32 -> 3) took 1.4 ms there against 4.1 ms as float32
  tap products, and on an AVX512_BF16-only CPU the two measured alike (docs/magvit.md "Speed")."""
  operands = onednn_conv.operand_dtype()
  if jnp.dtype(dtype) == jnp.bfloat16 and operands is not None:
    operands = "bfloat16" if onednn_conv.available("bfloat16") else None
  elif jnp.dtype(dtype) != jnp.float32:
    operands = None
  if operands != "bfloat16" and uses_tap_products(kernel_shape, strides):
    return "tap_products"
  return {None: "as_2d", "float32": "onednn", "bfloat16": "onednn_bf16"}[operands]


class CausalConv3d(nnx.Module):
  """y = conv(x) with causal time padding; kernel [kt, kh, kw, in, out] + bias [out]."""

  def __init__(self, features_in: int, features_out: int, kernel: Sequence[int] = (3, 3, 3),
               strides: Sequence[int] = (1, 1, 1), *, dtype=jnp.float32, zero_init: bool = False,
               rngs: nnx.Rngs):
    self.kernel_size, self.strides, self.dtype = tuple(kernel), tuple(strides), dtype
    init = nnx.initializers.zeros if zero_init else conv_init
    self.kernel = nnx.Param(nnx.with_partitioning(init, (None, None, None, "conv_in", "conv_out"))(
        rngs.params(), (*self.kernel_size, features_in, features_out), jnp.float32))
    self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("conv_out",))(
        rngs.params(), (features_out,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, Cin] -> [B, T', H', W', Cout]
    _, kh, kw = self.kernel_size
    _, sh, sw = self.strides
    padding_hw = [_same_pad(x.shape[2], kh, sh), _same_pad(x.shape[3], kw, sw)]
    lowering = cpu_lowering(self.kernel.shape, self.strides, self.dtype)
    if lowering == "tap_products":
      cpu = lambda a, k: conv3d_tap_products(a, k, padding_hw)  # noqa: E731
    elif lowering in ("onednn", "onednn_bf16"):
      operands = "bfloat16" if lowering == "onednn_bf16" else "float32"
      cpu = lambda a, k: conv3d_onednn(a, k, self.strides, padding_hw, operands)  # noqa: E731
    else:
      cpu = lambda a, k: conv3d_as_2d(a, k, self.strides, padding_hw)  # noqa: E731
    y = jax.lax.platform_dependent(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype),
        cpu=cpu,
        default=lambda a, k: conv3d_native(a, k, self.strides, padding_hw))
    return y + self.bias[...].astype(self.dtype)
