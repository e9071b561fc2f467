"""Rotary position embeddings (RoFormer, arXiv 2104.09864), the half-split variant used by
Llama/Gemma: dimension i is paired with dimension i + K/2."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
  """x [B, L, H, K], positions int [B, L] -> x rotated by angle position / base^(2i/K)."""
  k = x.shape[-1]
  freq = base ** (-jnp.arange(0, k // 2, dtype=jnp.float32) * 2.0 / k)       # [K/2]
  angle = positions.astype(jnp.float32)[..., None] * freq                       # [B, L, K/2]
  sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]      # [B, L, 1, K/2]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
