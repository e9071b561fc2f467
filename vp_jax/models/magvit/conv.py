"""Causal 3D convolution: the building block that keeps the tokenizer causal in time.

Time is padded on the past side only (kernel_t - 1 zero frames before the first frame), so output
frame t sees input frames <= t; with temporal stride 2 the output frame j sees frames <= 2j, which
maps T = 1 + 2k frames to 1 + k. Zero padding (not replicate) makes a 1-frame kernel placed in the
last temporal slice of a 3-frame kernel compute exactly the 2D convolution: that is inflation.
Space uses TF "SAME" padding. Layout is channels-last: [B, T, H, W, C].
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx



def rbg_key(key: jax.Array) -> jax.Array:
  """A threefry key (typed or raw uint32[2]) -> an "rbg" key for drawing large init tensors.

  On this project's XLA CPU build, compiling threefry bit generation for many parameter shapes
  takes minutes (ten conv kernels: > 6 min on a loaded 2-core machine); XLA's RngBitGenerator
  ("rbg") compiles in seconds. Keys are still derived from the model's threefry Rngs, so the
  initialization stays a pure function of the seed."""
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  data = data.reshape(-1).astype(jnp.uint32)
  return jax.random.wrap_key_data(jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)]),
                                  impl="rbg")


def with_rbg(init):
  """Wraps an initializer so its randomness is drawn with an rbg key (see `rbg_key`)."""
  def wrapped(key, shape, dtype=jnp.float32):
    return init(rbg_key(key), shape, dtype)
  return wrapped


conv_init = with_rbg(nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"))


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


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
    kt, kh, kw = self.kernel_size
    st, sh, sw = self.strides
    padding = [(kt - 1, 0), _same_pad(x.shape[2], kh, sh), _same_pad(x.shape[3], kw, sw)]
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype), (st, sh, sw), padding,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + self.bias[...].astype(self.dtype)
