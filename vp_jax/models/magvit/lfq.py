"""Lookup-free quantization (MAGVIT-v2): each latent dimension is one bit, q = sign(z) in {-1, 1}^D,
so D = 18 gives 2^18 codes without a codebook lookup.

Index convention: bit i (dimension i, little-endian) is 1 where q_i = +1; id = sum_i 2^i [q_i > 0].
Token factorization (for the SR transformer / LM): an id is k sub-tokens of D/k bits each, sub-token
g holding bits [g D/k, (g+1) D/k).

Entropy penalty, without ever materializing [batch, positions, 2^18]: the soft assignment is
p(c | z) ∝ exp(2 tau^-1 <z, c>) over c in {-1, 1}^D (the softmax over negative squared distances,
since ||z - c||^2 = ||z||^2 + D - 2 <z, c>). It factorizes over bits: p(c | z) = prod_i p_i(c_i | z_i)
with p_i(+1) = sigmoid(4 z_i / tau). Hence
- the per-sample entropy is exactly sum_i H(p_i), computed from D sigmoids per position;
- the codebook entropy H(E_z p(c | z)) does not factorize (the mean of product distributions is not
  a product). We factorize the bits into `groups` groups of D/groups bits (2 x 2^9 by default, the
  same split as the k = 2 sub-tokens) and use sum_g H(E_z p(c_g | z)): each group's 2^9-way marginal
  is exact, and the sum upper-bounds the joint entropy (equal when the groups are independent under
  the batch distribution). Maximizing it spreads usage over every sub-codebook, which is what
  prevents collapse, at [positions, 2^9] memory per group instead of [positions, 2^18].
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class LFQOutput:
  quantized: jax.Array          # [..., D] in {-1, 1}, straight-through gradient to z
  ids: jax.Array                # int32 [...], in [0, 2^D)
  commitment: jax.Array         # [] mean (z - sg(q))^2
  per_sample_entropy: jax.Array  # [] mean over positions of H(p(c | z)), nats
  codebook_entropy: jax.Array   # [] sum over bit groups of H(E p(c_g | z)), nats
  entropy_loss: jax.Array       # [] per_sample - gamma * codebook


def bits_to_ids(bits: jax.Array) -> jax.Array:
  """{0,1} or bool [..., D] -> int32 [...]; bit i has weight 2^i."""
  d = bits.shape[-1]
  return jnp.sum(bits.astype(jnp.int32) << jnp.arange(d, dtype=jnp.int32), axis=-1)


def ids_to_bits(ids: jax.Array, dim: int) -> jax.Array:
  """int [...] -> int32 {0, 1} [..., dim]."""
  return (ids[..., None].astype(jnp.int32) >> jnp.arange(dim, dtype=jnp.int32)) & 1


def ids_to_codes(ids: jax.Array, dim: int, dtype=jnp.float32) -> jax.Array:
  """int [...] -> {-1, 1} [..., dim]: the quantized latent of a token id."""
  return (2 * ids_to_bits(ids, dim) - 1).astype(dtype)


def factorize_ids(ids: jax.Array, dim: int = 18, k: int = 2) -> jax.Array:
  """int [...] ids in [0, 2^dim) -> int32 [..., k] sub-tokens in [0, 2^(dim/k)), low bits first."""
  if dim % k:
    raise ValueError(f"factorize_ids: dim={dim} is not divisible by k={k}.")
  b = dim // k
  return (ids[..., None].astype(jnp.int32) >> (b * jnp.arange(k, dtype=jnp.int32))) & (2 ** b - 1)


def unfactorize_ids(sub: jax.Array, dim: int = 18) -> jax.Array:
  """int [..., k] sub-tokens -> int32 [...] ids (inverse of `factorize_ids`)."""
  k = sub.shape[-1]
  if dim % k:
    raise ValueError(f"unfactorize_ids: dim={dim} is not divisible by k={k}.")
  b = dim // k
  return jnp.sum(sub.astype(jnp.int32) << (b * jnp.arange(k, dtype=jnp.int32)), axis=-1)


def _binary_entropy_from_logits(logits: jax.Array) -> jax.Array:
  p = jax.nn.sigmoid(logits)
  return -(p * jax.nn.log_sigmoid(logits) + (1 - p) * jax.nn.log_sigmoid(-logits))


def group_marginals(z: jax.Array, inv_temperature: float, groups: int) -> jax.Array:
  """E_z p(c_g | z) for each bit group: z [N, D] -> [groups, 2^(D/groups)] (sums to 1 per group)."""
  n, d = z.shape
  b = d // groups
  logits = 4.0 * inv_temperature * z.astype(jnp.float32)             # p_i(+1) = sigmoid(logits)
  logp1 = jax.nn.log_sigmoid(logits).reshape(n, groups, b)           # [N, G, b]
  logp0 = jax.nn.log_sigmoid(-logits).reshape(n, groups, b)
  codes = ids_to_bits(jnp.arange(2 ** b), b).astype(jnp.float32)    # [2^b, b]
  logq = (jnp.einsum("ngb,cb->gnc", logp1, codes)
          + jnp.einsum("ngb,cb->gnc", logp0, 1.0 - codes))           # [G, N, 2^b]
  return jnp.mean(jnp.exp(logq), axis=1)                             # [G, 2^b]


def _entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=-1)


def quantize(z: jax.Array, *, inv_temperature: float = 100.0, groups: int = 2,
             diversity_gamma: float = 1.0) -> LFQOutput:
  """z [..., D] -> LFQOutput. Entropy terms are averaged over all leading positions."""
  d = z.shape[-1]
  if d % groups:
    raise ValueError(f"quantize: latent dim {d} is not divisible by groups={groups}.")
  q = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
  quantized = z + jax.lax.stop_gradient(q - z)
  ids = bits_to_ids(z > 0)
  z32 = z.astype(jnp.float32)
  commitment = jnp.mean(jnp.square(z32 - jax.lax.stop_gradient(q.astype(jnp.float32))))
  flat = z32.reshape(-1, d)
  per_sample = jnp.mean(jnp.sum(_binary_entropy_from_logits(4.0 * inv_temperature * flat), -1))
  codebook = jnp.sum(_entropy(group_marginals(flat, inv_temperature, groups)))
  return LFQOutput(quantized, ids, commitment, per_sample, codebook,
                   per_sample - diversity_gamma * codebook)


def usage_metrics(ids: jax.Array, dim: int, groups: int = 2) -> dict[str, jax.Array]:
  """Codebook usage of a batch of hard codes: distinct ids (by sorting, no 2^D histogram), their
  fraction of min(positions, 2^D), and the perplexity exp(H) of each sub-codebook's histogram."""
  flat = ids.reshape(-1)
  s = jnp.sort(flat)
  distinct = 1 + jnp.sum(s[1:] != s[:-1])
  out = {"codes_used": distinct.astype(jnp.float32),
         "code_usage": distinct / min(flat.shape[0], 2 ** dim)}
  b = dim // groups
  sub = factorize_ids(flat, dim, groups)                              # [N, G]
  for g in range(groups):
    hist = jnp.zeros((2 ** b,), jnp.float32).at[sub[:, g]].add(1.0) / flat.shape[0]
    out[f"perplexity_{g}"] = jnp.exp(_entropy(hist))
  return out
