"""Encoder/decoder blocks: per-frame group norm, adaptive group norm, residual block, strided
downsampling and causal depth-to-space upsampling.

Group norm statistics are taken per frame (over H, W and the channels of a group), never across
time: statistics over T would let future frames change the past's tokens and would make an image
tokenize differently from the first frame of a video.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models.magvit.conv import CausalConv3d
from vp_jax.parallel.sharding import constrain

ACT_AXES = ("batch", None, None, None, "act_conv")


def _group_sums(v: jax.Array) -> jax.Array:
  """[B, T, N, G, Cg] -> [B, T, G]: sums over positions N and each group's Cg channels.

  On CPU in two stages, the per-position sums over the group's channels (the minor axis)
  materialized first: an optimization barrier keeps XLA from fusing the stages back into one
  reduction over non-adjacent axes, which XLA:CPU ran 4-5x slower (17x64x64x64, 8 groups: a
  one-step mean and variance took 6.8 ms, the two-stage sum and sum of squares 1.3 ms, 5.5 ms
  without the barrier; docs/magvit.md "Speed", stop 40). Other platforms reduce in one step, where
  the partial sums would only add a round trip through memory."""
  return jax.lax.platform_dependent(
      v,
      cpu=lambda v: jnp.sum(jax.lax.optimization_barrier(jnp.sum(v, axis=-1)), axis=2),
      default=lambda v: jnp.sum(v, axis=(2, 4)))


def group_moments(x: jax.Array, groups: int) -> tuple[jax.Array, jax.Array]:
  """Mean and (centered, two-pass) variance of each (frame, group) over H, W and the group's
  channels, in float32. [B, T, H, W, C] -> ([B, T, G], [B, T, G])."""
  b, t, h, w, c = x.shape
  xg = x.astype(jnp.float32).reshape(b, t, h * w, groups, c // groups)
  n = h * w * (c // groups)
  mean = _group_sums(xg) / n
  d = xg - mean[:, :, None, :, None]
  return mean, _group_sums(d * d) / n


def group_norm(x: jax.Array, groups: int, scale: jax.Array | float = 1.0,
               shift: jax.Array | float = 0.0, eps: float = 1e-6) -> jax.Array:
  """Normalizes each (frame, group) over H, W and the group's channels, then y * scale + shift
  (each broadcastable to [B, T, 1, 1, C]). [B, T, H, W, C] -> same, float32.

  The statistics are expanded to per-channel [B, T, 1, 1, C] arrays and the scale folded into
  1/std there, so the pass over x is one (x - mean_c) * a_c + shift_c per element with channel
  broadcasts."""
  c = x.shape[-1]
  mean, var = group_moments(x, groups)
  per_channel = lambda s: jnp.repeat(s, c // groups, axis=-1)[:, :, None, None, :]  # noqa: E731
  a = per_channel(jax.lax.rsqrt(var + eps)) * scale                    # [B, T, 1, 1, C]
  return (x.astype(jnp.float32) - per_channel(mean)) * a + shift


class GroupNorm(nnx.Module):
  def __init__(self, features: int, groups: int, *, dtype=jnp.float32):
    self.groups, self.dtype = groups, dtype
    self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, ("conv_out",))(
        None, (features,), jnp.float32))
    self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("conv_out",))(
        None, (features,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, C]
    return group_norm(x, self.groups, self.scale[...], self.bias[...]).astype(self.dtype)


def latent_for_frames(cond: jax.Array, num_frames: int) -> jax.Array:
  """Maps per-latent-frame conditioning [B, T', D] to T = 1 + r (T' - 1) frames causally: frame f
  takes latent frame ceil(f / r) (frame 0 -> 0, frames 1..r -> 1, ...). Returns [B, T, D]."""
  tl = cond.shape[1]
  if tl == 1:
    return jnp.broadcast_to(cond, (cond.shape[0], num_frames, cond.shape[2]))
  r = (num_frames - 1) // (tl - 1)
  idx = -(-jnp.arange(num_frames) // r)
  return jnp.take(cond, idx, axis=1)


class AdaptiveGroupNorm(nnx.Module):
  """Group norm whose per-channel scale and shift are predicted from the quantized latent (MAGVIT-v2
  decoder, StyleGAN-like): y = GN(x) * (1 + s(z)) + b(z), with z the latent's spatial mean per latent
  frame, mapped causally onto x's frames. The projections start at zero (plain group norm)."""

  def __init__(self, features: int, latent_dim: int, groups: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.groups, self.dtype = groups, dtype
    self.proj = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None, "conv_out"))(
        rngs.params(), (latent_dim, 2 * features), jnp.float32))
    self.proj_bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("conv_out",))(
        rngs.params(), (2 * features,), jnp.float32))

  def __call__(self, x: jax.Array, latent: jax.Array) -> jax.Array:
    # x [B, T, H, W, C]; latent [B, T', h, w, D]
    cond = jnp.mean(latent.astype(jnp.float32), axis=(2, 3))               # [B, T', D]
    cond = latent_for_frames(cond, x.shape[1])                             # [B, T, D]
    # Two dots on the column halves rather than one [B, T, 2C] product split in two: XLA:CPU fused
    # that split into the norm's loop over every element of x, which then ran ~4x slower (the
    # small decoder's largest norm + swish fusion: 16.5 -> 4.0 ms; docs/magvit.md "Speed").
    c = x.shape[-1]
    w, bias = self.proj[...], self.proj_bias[...]
    scale = (cond @ w[:, :c] + bias[:c])[:, :, None, None, :]              # [B, T, 1, 1, C]
    shift = (cond @ w[:, c:] + bias[c:])[:, :, None, None, :]
    return group_norm(x, self.groups, 1 + scale, shift).astype(self.dtype)


class ResBlock(nnx.Module):
  """x + conv(swish(GN(conv(swish(GN(x)))))); a 1x1x1 conv on the skip path when widths differ."""

  def __init__(self, features_in: int, features_out: int, groups: int, temporal_kernel: int, *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    k = (temporal_kernel, 3, 3)
    self.norm1 = GroupNorm(features_in, groups, dtype=dtype)
    self.conv1 = CausalConv3d(features_in, features_out, k, dtype=dtype, rngs=rngs)
    self.norm2 = GroupNorm(features_out, groups, dtype=dtype)
    self.conv2 = CausalConv3d(features_out, features_out, k, dtype=dtype, rngs=rngs)
    self.skip = (CausalConv3d(features_in, features_out, (1, 1, 1), dtype=dtype, rngs=rngs)
                 if features_in != features_out else None)

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, Cin] -> [B, T, H, W, Cout]
    h = self.conv1(jax.nn.swish(self.norm1(x)))
    h = self.conv2(jax.nn.swish(self.norm2(h)))
    skip = x if self.skip is None else self.skip(x)
    return constrain(skip + h, ACT_AXES)


class Downsample(nnx.Module):
  """Strided causal conv: H, W halved; T = 1 + 2k -> 1 + k when `temporal`."""

  def __init__(self, features_in: int, features_out: int, temporal: bool, temporal_kernel: int, *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv = CausalConv3d(features_in, features_out, (temporal_kernel, 3, 3),
                             (2 if temporal else 1, 2, 2), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


def depth_to_space(x: jax.Array, temporal: bool, features: int) -> jax.Array:
  """[B, T, H, W, (t*2*2*C)] -> [B, T*t - (t-1), 2H, 2W, C] with t = 2 if temporal else 1.

  The temporal variant drops the first sub-frame of the first frame, so 1 + k frames become 1 + 2k
  and frame 0 still depends on latent frame 0 only."""
  b, t, h, w, _ = x.shape
  ft = 2 if temporal else 1
  x = x.reshape(b, t, h, w, ft, 2, 2, features)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t * ft, 2 * h, 2 * w, features)
  return x[:, ft - 1:] if temporal else x


class Upsample(nnx.Module):
  """Causal conv to (t*4*C) channels, then depth-to-space (MAGVIT-v2's upsampling). `kernel`: the
  conv's spatial size (3, or 1 for a 1x1x1 conv)."""

  def __init__(self, features_in: int, features_out: int, temporal: bool, temporal_kernel: int, *,
               kernel: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
    self.temporal, self.features = temporal, features_out
    mult = (2 if temporal else 1) * 4
    size = (temporal_kernel, 3, 3) if kernel == 3 else (1, 1, 1)
    self.conv = CausalConv3d(features_in, features_out * mult, size, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return depth_to_space(self.conv(x), self.temporal, self.features)
