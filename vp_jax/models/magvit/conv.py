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
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.nn import hash_random
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
    y = jax.lax.platform_dependent(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype),
        cpu=lambda a, k: conv3d_as_2d(a, k, self.strides, padding_hw),
        default=lambda a, k: conv3d_native(a, k, self.strides, padding_hw))
    return y + self.bias[...].astype(self.dtype)
