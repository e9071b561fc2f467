"""Multi-head / grouped-query self-attention with rotary positions and an optional KV cache.

One implementation serves training (keys are the sequence itself), prefill (the same, returning
the keys and values to cache) and decoding (one new token attends to the cache). Which keys a query
sees is a boolean mask built by the caller: the prefix LM mask in training and prefill, "cached and
valid" while decoding.

The KV cache keeps one array per layer, keys as [B*G, K, S] and values as [B*G, S, K]: each is the
natural right-hand operand of its batched dot (q . k contracts K, probs . v contracts S) with a
single batch dimension, so a decode step writes its new entry in place and then reads the cache
once, with no transpose and no copy. (Measured on XLA:CPU: keys as [B, G, S, K] made it transpose
the whole key cache on every step, and a separate B axis made it duplicate the in-place update
into a copy of the cache for the dot; each cost more than the attention itself.)
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
  """Query/key/value/output projections and the attention itself. In training and prefill keys
  and values are [B, G, L, K] (kv-head major); the decode cache holds them as [B*G, K, S] and
  [B*G, S, K] (module docstring), so attending to a long cache never transposes it."""

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
    q = layers.project(x, self.query[...].astype(dt))                       # [B, L, H, K]
    k = layers.project(x, self.key[...].astype(dt))                         # [B, L, G, K]
    # [B, L, G, K] then swapped, like k: at L = 1 (decoding) the swap is free, whereas a direct
    # "bglk" output made XLA:CPU copy the value weight into a transposed layout on every step.
    v = jnp.swapaxes(layers.project(x, self.value[...].astype(dt)), 1, 2)
    q = apply_rotary(q, positions, self.cfg.rope_base)
    k = jnp.swapaxes(apply_rotary(k, positions, self.cfg.rope_base), 1, 2)
    q = constrain(q, ("batch", "length", "act_heads", None))
    return q, k, v

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q [B, L, H, K] over keys/values [B, G, S, K] with mask [B, L, S] -> [B, L, D]."""
    b, l, h, kd = q.shape
    g = k.shape[1]
    qg = q.reshape(b, l, g, h // g, kd)
    logits = jnp.einsum("blgrk,bgsk->bglrs", qg, k).astype(jnp.float32) * kd ** -0.5
    logits = jnp.where(mask[:, None, :, None, :], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bglrs,bgsk->bglrk", probs, v)                          # [B, G, L, R, K]
    return self._output(jnp.moveaxis(out, 1, 2).reshape(b, l, h, kd))

  def attend_cache(self, q: jax.Array, keys: jax.Array, values: jax.Array,
                   mask: jax.Array) -> jax.Array:
    """One query per row over a layer's cache: q [B, 1, H, K], keys [B*G, K, S], values
    [B*G, S, K] (cache layout, module docstring), mask [B, 1, S] -> [B, 1, D]."""
    b, _, h, kd = q.shape
    g = keys.shape[0] // b
    qn = q.reshape(b * g, h // g, kd)                                        # [B*G, R, K]
    logits = jnp.einsum("nrk,nks->nrs", qn, keys).astype(jnp.float32) * kd ** -0.5
    logits = jnp.where(jnp.repeat(mask, g, axis=0), logits, NEG_INF)        # row n: example n // G
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    out = jnp.einsum("nrs,nsk->nrk", probs, values)                          # [B*G, R, K]
    return self._output(out.reshape(b, 1, h, kd))

  def _output(self, out: jax.Array) -> jax.Array:
    """Per-head outputs [B, L, H, K] -> [B, L, D]."""
    out = constrain(out, ("batch", "length", "act_heads", None))
    return layers.project(out, self.out[...].astype(out.dtype), contract=2)
