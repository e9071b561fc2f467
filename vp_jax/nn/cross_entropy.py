"""Next-token cross-entropy over a large vocabulary without materializing the full logits.

The VideoPoet LM predicts over ~266k ids at up to ~2.6k positions: full float32 logits for a batch
of 8 would be 22 GB (and as much again for their gradient). `cross_entropy_sums` computes the logits
`chunk_length` positions at a time for all rows inside a `lax.scan`; each chunk is a
`jax.checkpoint`ed function, so the backward pass recomputes one chunk's logits instead of storing
all of them. Peak logits memory is B x chunk_length x V / (tensor shards) instead of B x L x V.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vp_jax.parallel.sharding import constrain


def _chunk_sums(project, hidden, targets, weights):
  """hidden [B, C, D], targets int [B, C], weights [B, C] -> (nll, lse^2, correct) weighted sums."""
  logits = project(hidden).astype(jnp.float32)                      # [B, C, V]
  logits = constrain(logits, ("batch", "length", "act_vocab"))
  lse = jax.nn.logsumexp(logits, axis=-1)                           # [B, C]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return ((lse - target_logit) * weights).sum(), (lse * lse * weights).sum(), (correct *
                                                                               weights).sum()


def cross_entropy_sums(hidden: jax.Array, targets: jax.Array, weights: jax.Array,
                       project: Callable[[jax.Array], jax.Array], chunk_length: int = 128
                       ) -> dict[str, jax.Array]:
  """Weighted sums over positions of the cross-entropy of `project(hidden)` against `targets`.

  hidden [B, L, D]; targets int [B, L]; weights float [B, L]; project: [B, C, D] -> [B, C, V].
  Returns {"nll", "z" (sum of log(Z)^2), "correct", "weight"} (all float32 scalars).
  `chunk_length` 0 (or >= L) computes all logits at once."""
  b, length, d = hidden.shape
  weights = weights.astype(jnp.float32)
  if chunk_length <= 0 or chunk_length >= length:
    nll, z, correct = _chunk_sums(project, hidden, targets, weights)
  else:
    pad = (-length) % chunk_length
    if pad:
      hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
      targets = jnp.pad(targets, ((0, 0), (0, pad)))
      weights = jnp.pad(weights, ((0, 0), (0, pad)))
    n = (length + pad) // chunk_length
    to_chunks = lambda x: jnp.moveaxis(x.reshape((b, n, chunk_length) + x.shape[2:]), 1, 0)
    step = jax.checkpoint(lambda h, t, w: _chunk_sums(project, h, t, w), prevent_cse=False)

    def body(carry, xs):
      sums = step(*xs)
      return tuple(c + s for c, s in zip(carry, sums)), None

    zero = jnp.zeros((), jnp.float32)
    (nll, z, correct), _ = jax.lax.scan(
        body, (zero, zero, zero), (to_chunks(hidden), to_chunks(targets), to_chunks(weights)))
  return {"nll": nll, "z": z, "correct": correct, "weight": weights.sum()}
