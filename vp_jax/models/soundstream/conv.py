"""Causal 1-D convolutions (and the 2-D one the STFT discriminator needs), channels-last.

Causal means left padding only: output frame t of a stride-S conv sees input samples < (t + 1) * S,
so a later sample never changes an earlier output (the codec is streamable). With left padding
(K - 1) * dilation + 1 - S a stride-S conv maps N samples to floor(N / S) frames. The transposed
conv (decoder upsampling) with kernel K = m * S maps T frames to T * S samples, and output sample n
sees input frames <= n // S.
Kernels start from LeCun-uniform values drawn with `vp_jax.nn.hash_random` (fast to compile).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.nn.hash_random import lecun_uniform

CONV_AXES = ("conv_kernel", "conv_in", "conv_out")


def _param(init, axes, key, shape):
  return nnx.Param(nnx.with_partitioning(init, axes)(key, shape, jnp.float32))


class CausalConv1d(nnx.Module):
  """[B, N, Cin] -> [B, N // stride, Cout]; zero left padding, optional dilation and groups."""

  def __init__(self, features_in: int, features_out: int, kernel: int, *, stride: int = 1,
               dilation: int = 1, groups: int = 1, rngs: nnx.Rngs):
    if features_in % groups or features_out % groups:
      raise ValueError(f"CausalConv1d: channels {features_in}->{features_out} not divisible by "
                       f"groups={groups}.")
    self.kernel = _param(lecun_uniform(), CONV_AXES, rngs.params(),
                         (kernel, features_in // groups, features_out))
    self.bias = _param(nnx.initializers.zeros, ("conv_out",), rngs.params(), (features_out,))
    self.stride, self.dilation, self.groups = stride, dilation, groups
    self.pad = (kernel - 1) * dilation + 1 - stride
    if self.pad < 0:
      raise ValueError(f"CausalConv1d: kernel {kernel} (dilation {dilation}) is shorter than its "
                       f"stride {stride}.")

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, Cin] -> [B, N // S, Cout]
    y = jax.lax.conv_general_dilated(
        x, self.kernel[...].astype(x.dtype), window_strides=(self.stride,),
        padding=[(self.pad, 0)], rhs_dilation=(self.dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
    return y + self.bias[...].astype(x.dtype)


class CausalConvTranspose1d(nnx.Module):
  """[B, T, Cin] -> [B, T * stride, Cout]; kernel = multiple * stride.

  Written as one matmul plus a shifted overlap-add: frame t writes kernel taps [i*S, (i+1)*S) to
  output block t + i. The blocks past the last input frame (the right overhang) are dropped, which
  is what keeps the upsampling causal.
  """

  def __init__(self, features_in: int, features_out: int, stride: int, *, multiple: int = 2,
               rngs: nnx.Rngs):
    # Each output sample sums `multiple` taps of features_in channels.
    self.kernel = _param(lecun_uniform(features_in * multiple), CONV_AXES, rngs.params(),
                         (features_in, multiple * stride, features_out))
    self.bias = _param(nnx.initializers.zeros, ("conv_out",), rngs.params(), (features_out,))
    self.stride, self.multiple = stride, multiple

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, Cin] -> [B, T * S, Cout]
    b, t, _ = x.shape
    s, m = self.stride, self.multiple
    taps = jnp.einsum("btc,cko->btko", x, self.kernel[...].astype(x.dtype))  # [B, T, m*S, Cout]
    taps = taps.reshape(b, t, m, s, -1)
    out = taps[:, :, 0]
    for i in range(1, m):   # block t gets taps i of frame t - i
      shifted = jnp.pad(taps[:, :t - i, i], ((0, 0), (i, 0), (0, 0), (0, 0)))
      out = out + shifted
    return out.reshape(b, t * s, -1) + self.bias[...].astype(x.dtype)


class Conv2d(nnx.Module):
  """[B, H, W, Cin] -> [B, H', W', Cout] with 'SAME'-style symmetric padding (non-causal; used on
  spectrograms by the discriminator only)."""

  def __init__(self, features_in: int, features_out: int, kernel: Sequence[int],
               stride: Sequence[int] = (1, 1), *, rngs: nnx.Rngs):
    self.kernel = _param(lecun_uniform(), ("conv_kernel", "conv_kernel", "conv_in",
                                               "conv_out"),
                         rngs.params(), (*kernel, features_in, features_out))
    self.bias = _param(nnx.initializers.zeros, ("conv_out",), rngs.params(), (features_out,))
    self.stride = tuple(stride)
    self.padding = [((k - 1) // 2, k // 2) for k in kernel]

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x, self.kernel[...].astype(x.dtype), window_strides=self.stride, padding=self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...].astype(x.dtype)
