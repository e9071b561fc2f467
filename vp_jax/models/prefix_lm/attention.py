"""Multi-head / grouped-query self-attention with rotary positions and an optional KV cache.

One implementation serves training (keys are the sequence itself), prefill (the same, returning
the keys and values to cache) and decoding (one new token attends to the cache). Which keys a query
sees is a boolean mask built by the caller: the prefix LM mask in training and prefill, "cached and
valid" while decoding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.nn import layers
from vp_jax.nn.rotary import apply_rotary
from vp_jax.parallel.sharding import constrain

from vp_jax.models.prefix_lm.config import PrefixLMConfig

NEG_INF = -1e30


def prefix_lm_mask(length: int, prefix_length: jax.Array, key_valid: jax.Array) -> jax.Array:
  """[B, L, L] bool: query i sees key j if j is valid and (j <= i or j is in the prefix).

  prefix_length int [B]; key_valid bool [B, L] (False for padding and masked text slots)."""
  i = jnp.arange(length)[:, None]
  j = jnp.arange(length)[None, :]
  visible = (j <= i)[None] | (j[None] < prefix_length[:, None, None])
  # A query whose every key is masked (only possible for an invalid position) still sees itself,
  # so softmax stays finite; its output is never used.
  return (visible & key_valid[:, None, :]) | (i == j)[None]


class Attention(nnx.Module):
  """Keys and values are kept as [B, G, S, K] (kv-head major), the layout XLA's batched dot wants,
  so attending to a long KV cache never transposes it."""

  def __init__(self, cfg: PrefixLMConfig, *, rngs: nnx.Rngs):
    d, h, g, k = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.rope_dim
    init = layers.default_kernel_init
    self.cfg = cfg
    self.query = nnx.Param(nnx.with_partitioning(init, ("embed", "heads", "kv"))(
        rngs.params(), (d, h, k), jnp.float32))
    self.key = nnx.Param(nnx.with_partitioning(init, ("embed", "heads", "kv"))(
        rngs.params(), (d, g, k), jnp.float32))
    self.value = nnx.Param(nnx.with_partitioning(init, ("embed", "heads", "kv"))(
        rngs.params(), (d, g, k), jnp.float32))
    self.out = nnx.Param(nnx.with_partitioning(init, ("heads", "kv", "embed"))(
        rngs.params(), (h, k, d), jnp.float32))

  def project(self, x: jax.Array, positions: jax.Array):
    """x [B, L, D] -> q [B, L, H, K]; k and v [B, G, L, K] (rotary applied to q and k)."""
    dt = x.dtype
    q = jnp.einsum("bld,dhk->blhk", x, self.query[...].astype(dt))
    k = jnp.einsum("bld,dgk->blgk", x, self.key[...].astype(dt))
    v = jnp.einsum("bld,dgk->bglk", x, self.value[...].astype(dt))
    q = apply_rotary(q, positions, self.cfg.rope_base)
    k = jnp.swapaxes(apply_rotary(k, positions, self.cfg.rope_base), 1, 2)
    q = constrain(q, ("batch", "length", "act_heads", None))
    return q, k, v

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
             new_kv: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """q [B, L, H, K] over keys/values [B, G, S, K] with mask [B, L, S] -> [B, L, D].

    `new_kv` ([B, G, L, K] each) adds keys every query sees, in one softmax with the others:
    decoding attends to the cache plus its own token without writing the cache first."""
    b, l, h, kd = q.shape
    g = k.shape[1]
    qg = q.reshape(b, l, g, h // g, kd)
    logits = jnp.einsum("blgrk,bgsk->bglrs", qg, k).astype(jnp.float32) * kd ** -0.5
    logits = jnp.where(mask[:, None, :, None, :], logits, NEG_INF)
    if new_kv is not None:
      own = jnp.einsum("blgrk,bgsk->bglrs", qg, new_kv[0]).astype(jnp.float32) * kd ** -0.5
      logits = jnp.concatenate([logits, own], axis=-1)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    s = k.shape[2]
    out = jnp.einsum("bglrs,bgsk->bglrk", probs[..., :s], v)                # [B, G, L, R, K]
    if new_kv is not None:
      out = out + jnp.einsum("bglrs,bgsk->bglrk", probs[..., s:], new_kv[1])
    out = jnp.moveaxis(out, 1, 2).reshape(b, l, h, kd)
    out = constrain(out, ("batch", "length", "act_heads", None))
    return jnp.einsum("blhk,hkd->bld", out, self.out[...].astype(q.dtype))
