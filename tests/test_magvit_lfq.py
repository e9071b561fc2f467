"""Lookup-free quantization: values, id <-> bits, factorized entropy vs direct computation,
straight-through gradients, token factorization, usage metrics."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.models.magvit import lfq


def _z(shape, seed=0, scale=0.3):
  return jnp.asarray(np.random.default_rng(seed).normal(0, scale, shape), jnp.float32)


def test_values_and_ids():
  z = _z((4, 5, 18))
  out = lfq.quantize(z)
  q = np.asarray(out.quantized)
  assert set(np.unique(q)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(q, np.where(np.asarray(z) > 0, 1.0, -1.0))
  ids = np.asarray(out.ids)
  assert ids.min() >= 0 and ids.max() < 2 ** 18
  expected = ((np.asarray(z) > 0) * (2 ** np.arange(18))).sum(-1)
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_array_equal(np.asarray(lfq.ids_to_codes(out.ids, 18)), q)


def test_index_bits_round_trip():
  ids = jnp.asarray([0, 1, 2, 5, 2 ** 17, 2 ** 18 - 1, 123456], jnp.int32)
  bits = lfq.ids_to_bits(ids, 18)
  assert bits.shape == (7, 18)
  np.testing.assert_array_equal(np.asarray(bits[3, :4]), [1, 0, 1, 0])
  np.testing.assert_array_equal(np.asarray(lfq.bits_to_ids(bits)), np.asarray(ids))


def test_factorize_ids():
  ids = jnp.asarray([0, 511, 512, 2 ** 18 - 1, 3 * 512 + 7], jnp.int32)
  sub = lfq.factorize_ids(ids, 18, 2)
  np.testing.assert_array_equal(np.asarray(sub), [[0, 0], [511, 0], [0, 1], [511, 511], [7, 3]])
  np.testing.assert_array_equal(np.asarray(lfq.unfactorize_ids(sub, 18)), np.asarray(ids))
  with pytest.raises(ValueError, match="k=4"):
    lfq.factorize_ids(ids, 18, 4)


def _direct_probs(z, inv_t):
  """Softmax over all 2^D codes of -||z - c||^2 * inv_t / ... (logits 2 inv_t <z, c>)."""
  d = z.shape[-1]
  codes = np.array(list(itertools.product([0, 1], repeat=d)))[:, ::-1]  # row j = bits of j
  codes = 2.0 * codes - 1.0
  # Row j must be the code with id j (bit i weight 2^i).
  assert np.all(((codes > 0) * 2 ** np.arange(d)).sum(-1) == np.arange(2 ** d))
  logits = 2 * inv_t * np.asarray(z, np.float64) @ codes.T
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(-1, keepdims=True)


def _h(p):
  return -(p * np.log(np.maximum(p, 1e-300))).sum(-1)


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_entropy_terms_against_direct_computation(groups):
  d, inv_t = 6, 2.0
  z = _z((40, d), seed=groups, scale=0.5)
  out = lfq.quantize(z, inv_temperature=inv_t, groups=groups, diversity_gamma=0.7)
  p = _direct_probs(z, inv_t)                                  # [N, 64]
  np.testing.assert_allclose(float(out.per_sample_entropy), _h(p).mean(), rtol=1e-5)
  # Codebook term: sum over bit groups of the entropy of the batch-mean marginal of each group.
  b = d // groups
  ids = np.arange(2 ** d)
  expected = 0.0
  marginals = np.asarray(lfq.group_marginals(z, inv_t, groups))   # [groups, 2^b]
  assert marginals.shape == (groups, 2 ** b)
  for g in range(groups):
    sub = (ids >> (g * b)) & (2 ** b - 1)
    marginal = np.stack([p[:, sub == s].sum(-1) for s in range(2 ** b)], -1).mean(0)
    np.testing.assert_allclose(marginals[g], marginal, rtol=1e-5, atol=1e-7)
    expected += _h(marginal)
  np.testing.assert_allclose(float(out.codebook_entropy), expected, rtol=1e-5)
  if groups == 1:
    np.testing.assert_allclose(float(out.codebook_entropy), _h(p.mean(0)), rtol=1e-5)
  else:   # the factorized term upper-bounds the joint codebook entropy
    assert float(out.codebook_entropy) >= _h(p.mean(0)) - 1e-6
  np.testing.assert_allclose(float(out.entropy_loss),
                             float(out.per_sample_entropy) - 0.7 * float(out.codebook_entropy),
                             rtol=1e-6)


def test_paper_size_entropy_memory_is_per_group():
  # 2^18 codes: the largest intermediate is [groups, N, 2^9], never [N, 2^18].
  z = jax.ShapeDtypeStruct((4, 1280, 18), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda x: lfq.quantize(x).entropy_loss)(z)
  sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars]
  assert max(sizes) <= 2 * 4 * 1280 * 512
  assert max(sizes) < 4 * 1280 * 2 ** 18 // 100


def test_straight_through_and_commitment_gradients():
  z = _z((3, 7, 18), seed=5)
  w = _z((3, 7, 18), seed=6)
  # d/dz of sum(w * q_st) is w (identity through the sign).
  g = jax.grad(lambda x: jnp.sum(w * lfq.quantize(x).quantized))(z)
  np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)
  # Commitment: d/dz mean((z - sg(q))^2) = 2 (z - q) / n.
  gc = jax.grad(lambda x: lfq.quantize(x).commitment)(z)
  q = np.where(np.asarray(z) > 0, 1.0, -1.0)
  np.testing.assert_allclose(np.asarray(gc), 2 * (np.asarray(z) - q) / z.size, rtol=1e-5)
  ge = jax.grad(lambda x: lfq.quantize(x).entropy_loss)(z)
  assert float(jnp.linalg.norm(ge)) > 0 and np.all(np.isfinite(np.asarray(ge)))


def test_usage_metrics():
  ids = jnp.asarray([[0, 0, 1, 512], [513, 1, 1, 2 ** 18 - 1]], jnp.int32)
  m = lfq.usage_metrics(ids, 18, 2)
  assert float(m["codes_used"]) == 5
  np.testing.assert_allclose(float(m["code_usage"]), 5 / 8)
  # Low sub-token: values 0,0,1,0,1,1,1,511 -> counts {0:3, 1:4, 511:1}.
  p = np.array([3, 4, 1]) / 8
  np.testing.assert_allclose(float(m["perplexity_0"]), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
