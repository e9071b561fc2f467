"""Residual vector quantization (SoundStream section 3.2, Algorithm 1) with EMA codebooks.

Level l quantizes the residual left by levels < l to its nearest code (squared Euclidean distance);
the decoder input is the sum of the chosen codes, passed to the encoder with a straight-through
estimator. Codebooks are not trained by gradients but by exponential moving averages of the
vectors assigned to each code (VQ-VAE-2 / SoundStream): with decay d,

    count_k <- d count_k + (1 - d) n_k,      sum_k <- d sum_k + (1 - d) sum_{x -> k} x,
    code_k  <- sum_k / smoothed(count)_k     (Laplace smoothing with eps).

The first training batch initializes each level by k-means on that level's residuals (k-means++ is
not used: random data vectors, then Lloyd iterations; `kmeans_iters=0` keeps the data vectors).
After every update, codes whose EMA count is below `dead_code_threshold` are re-seeded with random
residual vectors of the current batch (their count set to the threshold). Quantizer dropout
(Section 3.3): each training example uses only its first n_q ~ U{1..L} levels, so one model serves
every bitrate. The codebook state is non-parameter NNX variables: the shared trainer carries it in
the train state, and only the caller's `update=True` (the generator step) changes it.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.nn import hash_random


class CodebookState(nnx.Variable):
  """EMA codebook buffers (codebook, counts, sums, initialized flag): updated, not trained."""


@flax.struct.dataclass
class RVQOutput:
  quantized: jax.Array        # [B, T, D] sum of the chosen codes (straight-through to the input)
  codes: jax.Array            # int32 [B, L, T]
  commitment: jax.Array       # [] mean over all L levels of ||residual - sg(code)||^2 / D (a
                              # level's mean over the rows using it; 0 when none does, as the
                              # null loss of vector-quantize-pytorch's dropped levels)
  residual_norms: jax.Array   # [L + 1] RMS of the residual before level 0 .. after level L-1, over
                              # the rows using that level (a level none uses repeats the previous)
  metrics: dict[str, Any]


def _sq_dists(x: jax.Array, codebook: jax.Array) -> jax.Array:  # [N, D], [K, D] -> [N, K]
  return (jnp.sum(x * x, -1, keepdims=True) - 2.0 * x @ codebook.T
          + jnp.sum(codebook * codebook, -1)[None])


def _sample_rows(key: jax.Array, x: jax.Array, weights: jax.Array, num: int) -> jax.Array:
  """`num` rows of x drawn with replacement, in proportion to `weights` [N]."""
  weights = jnp.where(weights.sum() > 0, weights, jnp.ones_like(weights))
  cdf = jnp.cumsum(weights)
  u = hash_random.uniform(key, (num,)) * cdf[-1]
  return x[jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, x.shape[0] - 1)]


def kmeans(x: jax.Array, weights: jax.Array, num_codes: int, iters: int,
           key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Weighted Lloyd k-means from random data rows: x [N, D], weights [N] -> centroids [K, D],
  counts [K] (empty clusters keep their seed row)."""
  cent = _sample_rows(key, x, weights, num_codes)

  def stats(cent):
    onehot = jax.nn.one_hot(jnp.argmin(_sq_dists(x, cent), -1), num_codes) * weights[:, None]
    return onehot.sum(0), onehot.T @ x                            # [K], [K, D]

  def step(_, cent):
    counts, sums = stats(cent)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-9)[:, None], cent)

  cent = jax.lax.fori_loop(0, iters, step, cent)
  return cent, stats(cent)[0]


class ResidualVQ(nnx.Module):
  """Residual vector quantizer: `num_levels` codebooks of `codebook_size`, each quantizing what
  the levels before it left; EMA codebook updates with k-means init and dead-code replacement
  (SoundStream, Encodec), quantizer dropout in training."""

  def __init__(self, num_levels: int, codebook_size: int, dim: int, *, decay: float = 0.99,
               eps: float = 1e-5, dead_code_threshold: float = 2.0, kmeans_iters: int = 10,
               quantizer_dropout: float = 1.0, rngs: nnx.Rngs):
    self.num_levels, self.codebook_size, self.dim = num_levels, codebook_size, dim
    self.decay, self.eps = decay, eps
    self.dead_code_threshold, self.kmeans_iters = dead_code_threshold, kmeans_iters
    self.quantizer_dropout = quantizer_dropout
    init = hash_random.lecun_uniform(dim)(rngs.params(), (num_levels, codebook_size, dim))
    self.codebook = CodebookState(init)                                       # [L, K, D]
    self.ema_count = CodebookState(jnp.ones((num_levels, codebook_size), jnp.float32))  # [L, K]
    self.ema_sum = CodebookState(init)                                        # [L, K, D]
    self.initialized = CodebookState(jnp.zeros((), jnp.int32))                # 0 until 1st update

  def dequantize(self, codes: jax.Array) -> jax.Array:
    """codes int [B, L', T] (L' <= L leading levels) -> [B, T, D] sum of their codes."""
    levels = codes.shape[1]
    if levels > self.num_levels:
      raise ValueError(f"ResidualVQ.dequantize: {levels} levels given, the quantizer has "
                       f"{self.num_levels}.")
    cb = self.codebook[...]
    return sum(cb[l][codes[:, l]] for l in range(levels))

  def _active_levels(self, batch: int, key: jax.Array | None, train: bool,
                     num_levels: int | None) -> jax.Array:
    """int32 [B]: how many leading levels each example uses."""
    n = self.num_levels if num_levels is None else num_levels
    if not 1 <= n <= self.num_levels:
      raise ValueError(f"ResidualVQ: num_levels={n} must be in [1, {self.num_levels}].")
    full = jnp.full((batch,), n, jnp.int32)
    if not train or key is None or self.quantizer_dropout == 0.0:
      return full
    u = hash_random.uniform(key, (2, batch))
    sampled = 1 + jnp.minimum((u[0] * self.num_levels).astype(jnp.int32), self.num_levels - 1)
    dropped = u[1] < self.quantizer_dropout
    return jnp.where(dropped, sampled, full)

  def __call__(self, z: jax.Array, *, train: bool = False, update: bool = False,
               key: jax.Array | None = None, num_levels: int | None = None) -> RVQOutput:
    """z [B, T, D] -> RVQOutput. `update` (training's generator step) runs the k-means init on the
    first call, then the EMA update and dead-code replacement; `key` drives quantizer dropout and
    the random data rows those use."""
    b, t, d = z.shape
    key = jax.random.PRNGKey(0) if key is None else key
    keys = [jax.random.fold_in(key, i) for i in range(2 * self.num_levels + 1)]
    active = self._active_levels(b, keys[0], train, num_levels)               # [B]
    flat = z.reshape(b * t, d)
    residual = flat
    quantized = jnp.zeros_like(flat)
    codes, commits, norms = [], [], [jnp.sqrt(jnp.mean(flat * flat))]
    metrics: dict[str, Any] = {}
    new = {"codebook": [], "ema_count": [], "ema_sum": []}
    first = self.initialized[...] == 0
    for level in range(self.num_levels):
      w = jnp.repeat((level < active).astype(z.dtype), t)                    # [B*T]
      r = jax.lax.stop_gradient(residual)
      cb, count, total = self.codebook[level], self.ema_count[level], self.ema_sum[level]
      if update:
        cb, count, total = jax.lax.cond(
            first, lambda: self._kmeans_state(r, w, keys[1 + level]),
            lambda: (cb, count, total))
      idx = jnp.argmin(_sq_dists(r, cb), -1)                                 # [B*T]
      q = jax.lax.stop_gradient(cb[idx])                                     # [B*T, D]
      denom = jnp.maximum(w.sum(), 1.0)
      commits.append(jnp.sum(w * jnp.mean((residual - q) ** 2, -1)) / denom)
      quantized = quantized + w[:, None] * q
      residual = residual - w[:, None] * q
      # over the rows that used this level; a level no row used leaves the residual as it was
      norms.append(jnp.where(w.sum() > 0,
                             jnp.sqrt(jnp.sum(w * jnp.mean(residual ** 2, -1)) / denom),
                             norms[-1]))
      codes.append(idx.reshape(b, t))
      onehot = jax.nn.one_hot(idx, self.codebook_size) * w[:, None]         # [B*T, K]
      counts = onehot.sum(0)
      probs = counts / jnp.maximum(counts.sum(), 1e-9)
      metrics[f"rvq/perplexity_{level}"] = jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10)))
      metrics[f"rvq/usage_{level}"] = jnp.mean((counts > 0).astype(jnp.float32))
      if update:
        cb, count, total, dead = self._ema_update(r, onehot, counts, count, total, w,
                                                  keys[1 + self.num_levels + level])
        metrics[f"rvq/dead_codes_{level}"] = dead
      new["codebook"].append(cb)
      new["ema_count"].append(count)
      new["ema_sum"].append(total)
    if update:
      self.codebook[...] = jnp.stack(new["codebook"])
      self.ema_count[...] = jnp.stack(new["ema_count"])
      self.ema_sum[...] = jnp.stack(new["ema_sum"])
      self.initialized[...] = jnp.ones((), jnp.int32)
    quantized = quantized.reshape(b, t, d)
    out = z + jax.lax.stop_gradient(quantized - z)                          # straight-through
    metrics["rvq/active_levels"] = jnp.mean(active.astype(jnp.float32))
    return RVQOutput(out, jnp.stack(codes, 1).astype(jnp.int32), jnp.mean(jnp.stack(commits)),
                     jnp.stack(norms), metrics)

  def _kmeans_state(self, r, w, key):
    cent, counts = kmeans(r, w, self.codebook_size, self.kmeans_iters, key)
    return cent, counts, cent * counts[:, None]

  def _ema_update(self, r, onehot, counts, count, total, w, key):
    """One EMA step for one level, then dead-code replacement. Returns (codebook, count, sum,
    number of codes replaced)."""
    d = self.decay
    count = d * count + (1 - d) * counts
    total = d * total + (1 - d) * (onehot.T @ r)
    n = count.sum()
    smoothed = (count + self.eps) / (n + self.codebook_size * self.eps) * n
    cb = total / smoothed[:, None]
    thr = self.dead_code_threshold
    dead = count < thr if thr > 0 else jnp.zeros_like(count, bool)
    seeds = _sample_rows(key, r, w, self.codebook_size)
    cb = jnp.where(dead[:, None], seeds, cb)
    total = jnp.where(dead[:, None], seeds * thr, total)
    count = jnp.where(dead, thr, count)
    return cb, count, total, dead.sum().astype(jnp.float32)
