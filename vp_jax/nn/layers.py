"""Small layers with logical-axis annotations: dense, RMSNorm, embedding.

Every parameter carries logical axis names (see `vp_jax.parallel.rules`); the mesh mapping is config.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

default_kernel_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def project(x: jax.Array, kernel: jax.Array, contract: int = 1) -> jax.Array:
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], contracting the last `contract` axes of x
  with the first `contract` of the kernel, computed as one 2D matmul [N, prod(in)] @
  [prod(in), prod(out)] with all leading axes of x flattened into N.

  Why flattened: with [B, L, ...] activations the weight gradient contracts over two axes (B and
  L), and XLA:CPU then transposes the whole activation gradient (fused with its elementwise
  producer, at a fraction of memory bandwidth) before the matmul; a single leading axis keeps
  every forward and backward matmul in the layout the matmul kernel takes directly (measured: the
  SwiGLU MLP's value_and_grad at 8 x 512 x 512 -> 2048 went from 770 to 508 ms). The reshapes
  merge or split only leading axes, so a batch sharding carries through them."""
  lead, inner = x.shape[:x.ndim - contract], x.shape[x.ndim - contract:]
  if tuple(kernel.shape[:contract]) != tuple(inner):
    raise ValueError(f"project: x {x.shape} and kernel {kernel.shape} do not contract over "
                     f"{contract} axes.")
  out = kernel.shape[contract:]
  y = x.reshape(-1, math.prod(inner)) @ kernel.reshape(math.prod(inner), math.prod(out))
  return y.reshape(*lead, *out)


class Dense(nnx.Module):
  """y = x @ W over the last axis (no bias), W annotated with `axes` = (in, out) logical names."""

  def __init__(self, features_in: int, features_out: int, axes: Sequence[str], *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.kernel = nnx.Param(
        nnx.with_partitioning(default_kernel_init, tuple(axes))(
            rngs.params(), (features_in, features_out), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:  # [..., in] -> [..., out]
    return project(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, computed in float32."""

  def __init__(self, features: int, *, eps: float = 1e-6, dtype=jnp.float32):
    self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, ("norm",))(
        None, (features,), jnp.float32))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...]).astype(self.dtype)


class Embed(nnx.Module):
  """Token embedding table [vocab, embed]; `attend` computes logits against it (weight tying).

  Ids must lie in [0, vocab): inside jit an id out of range cannot raise, and `jnp.take` gives a
  NaN row for id >= vocab (the trainer then skips the step as non-finite) and counts negative
  ids from the end (-1 is the last row).
  Ids are range-checked where they are made: `data.lm_examples` (every code against the unified
  vocabulary, naming the segment) and the tokenizers' `decode`."""

  def __init__(self, vocab_size: int, features: int, *, dtype=jnp.float32, init_std: float = 1.0,
               rngs: nnx.Rngs):
    self.embedding = nnx.Param(nnx.with_partitioning(
        nnx.initializers.normal(stddev=init_std), ("vocab", "embed"))(
            rngs.params(), (vocab_size, features), jnp.float32))
    self.dtype = dtype

  def __call__(self, ids: jax.Array) -> jax.Array:  # [B, L] -> [B, L, D]
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., V] logits against the table
    return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype))


def dropout(y: jax.Array, key: jax.Array | None, rate: float, salt: int = 0) -> jax.Array:
  """Inverted dropout with the key `fold_in(key, salt)`; identity when `key` is None or rate 0."""
  if key is None or rate == 0.0:
    return y
  keep = jax.random.bernoulli(jax.random.fold_in(key, salt), 1.0 - rate, y.shape)
  return jnp.where(keep, y / (1.0 - rate), 0).astype(y.dtype)
