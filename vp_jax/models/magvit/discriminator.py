"""3D StyleGAN-style discriminator (MAGVIT / MAGVIT-v2): residual blocks with 3x3x3 convs, leaky
ReLU and 2x average-pool downsampling (time too while T > 1), then a global average and a 2-layer
head giving one logit per clip. Not causal (it judges whole clips).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models.magvit.conv import conv_init, variance_scaling_uniform
from vp_jax.parallel.sharding import constrain


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  k = kernel.shape[:3]
  pad = [((s - 1) // 2, s // 2) for s in k]
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1, 1), pad,
                                   dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return y + bias.astype(x.dtype)


def avg_pool(x: jax.Array) -> jax.Array:
  """2x average pool over H, W, and over T when T > 1; odd sizes are edge-padded first.
  [B, T, H, W, C] -> [B, ceil(T/2) or 1, ceil(H/2), ceil(W/2), C]."""
  b, t, h, w, c = x.shape
  ft = 2 if t > 1 else 1
  pad = [(0, 0), (0, (-t) % ft), (0, h % 2), (0, w % 2), (0, 0)]
  if any(p[1] for p in pad):
    x = jnp.pad(x, pad, mode="edge")
  t2, h2, w2 = x.shape[1] // ft, x.shape[2] // 2, x.shape[3] // 2
  return x.reshape(b, t2, ft, h2, 2, w2, 2, c).mean(axis=(2, 4, 6))


class _Conv(nnx.Module):
  def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs):
    self.kernel = nnx.Param(nnx.with_partitioning(conv_init, (None, None, None, "conv_in",
                                                              "conv_out"))(
        rngs.params(), (k, k, k, cin, cout), jnp.float32))
    self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("conv_out",))(
        rngs.params(), (cout,), jnp.float32))

  def __call__(self, x):
    return _conv(x, self.kernel[...], self.bias[...])


class DiscBlock(nnx.Module):
  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.conv1 = _Conv(cin, cin, 3, rngs=rngs)
    self.conv2 = _Conv(cin, cout, 3, rngs=rngs)
    self.skip = _Conv(cin, cout, 1, rngs=rngs)

  def __call__(self, x):  # [B, T, H, W, Cin] -> [B, ~T/2, H/2, W/2, Cout]
    h = jax.nn.leaky_relu(self.conv1(x), 0.2)
    h = avg_pool(jax.nn.leaky_relu(self.conv2(h), 0.2))
    return (h + self.skip(avg_pool(x))) / math.sqrt(2.0)


class Discriminator(nnx.Module):
  def __init__(self, filters: int, multipliers: tuple[int, ...], *, rngs: nnx.Rngs):
    self.conv_in = _Conv(3, filters, 3, rngs=rngs)
    blocks, width = [], filters
    for m in multipliers:
      blocks.append(DiscBlock(width, filters * m, rngs=rngs))
      width = filters * m
    self.blocks = nnx.List(blocks)
    self.conv_out = _Conv(width, width, 3, rngs=rngs)
    dense = dict(kernel_init=nnx.with_partitioning(variance_scaling_uniform(1.0),
                                                   ("conv_in", "conv_out")),
                 bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("conv_out",)))
    self.dense1 = nnx.Linear(width, width, rngs=rngs, **dense)
    self.dense2 = nnx.Linear(width, 1, rngs=rngs, **dense)

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, 3] in [-1, 1] -> [B] logits
    h = jax.nn.leaky_relu(self.conv_in(x), 0.2)
    for block in self.blocks:
      h = constrain(block(h), ("batch", None, None, None, "act_conv"))
    h = jax.nn.leaky_relu(self.conv_out(h), 0.2)
    h = jnp.mean(h, axis=(1, 2, 3))
    return self.dense2(jax.nn.leaky_relu(self.dense1(h), 0.2))[:, 0]
