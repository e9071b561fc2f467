"""Residual VQ: residuals shrink level by level, k-means init, the EMA update and dead-code
replacement on hand-made cases, quantizer dropout, dequantize, metrics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.soundstream.rvq import ResidualVQ, kmeans


def run(rvq, z, key=None, **flags):
  """rvq(z, key=key, **flags) under nnx.jit (codebook updates propagate back to `rvq`)."""
  key = jax.random.PRNGKey(0) if key is None else key
  return nnx.jit(lambda m, z, k: m(z, key=k, **flags))(rvq, z, key)


@pytest.fixture(autouse=True)
def _lazy_sharding():
  """Modules built outside a mesh: no eager sharding of the annotated parameters."""
  with nnx.use_eager_sharding(False):
    yield


def test_residuals_shrink_level_by_level_on_random_data():
  rvq = ResidualVQ(4, 64, 8, kmeans_iters=10, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (8, 64, 8))
  out = run(rvq, z, jax.random.PRNGKey(2), train=True, update=True)   # k-means init per level
  assert int(rvq.initialized[...]) == 1
  norms = np.asarray(out.residual_norms)
  assert norms.shape == (5,)
  # Quantizer dropout (1.0 by default) gives each example 1-4 levels; a level no example used
  # repeats the norm before it (here level 3 of this batch: it used to read 0 and pass as shrinking).
  assert np.all(np.diff(norms) <= 0), norms
  assert np.all(np.diff(norms)[:3] < 0), norms       # levels 0-2 are used and shrink strictly
  assert norms[-1] < 0.6 * norms[0], norms
  # At inference (no update) on the same data, the trained codebooks keep shrinking residuals.
  again = run(rvq, z)
  assert np.all(np.diff(np.asarray(again.residual_norms)) < 0)
  np.testing.assert_allclose(np.asarray(rvq.dequantize(again.codes)),
                             np.asarray(again.quantized), atol=1e-5)


def test_kmeans_recovers_two_clusters():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(50, 2)) * 0.1 + [5.0, 0.0]
  b = rng.normal(size=(30, 2)) * 0.1 + [-5.0, 1.0]
  x = jnp.asarray(np.concatenate([a, b]), jnp.float32)
  cent, counts = kmeans(x, jnp.ones(80), 2, 10, jax.random.PRNGKey(3))
  order = np.argsort(np.asarray(cent)[:, 0])
  np.testing.assert_allclose(np.asarray(cent)[order], [b.mean(0), a.mean(0)], atol=1e-4)
  np.testing.assert_array_equal(np.asarray(counts)[order], [30, 50])


def _one_level(threshold):
  rvq = ResidualVQ(1, 2, 2, decay=0.5, eps=1e-5, dead_code_threshold=threshold,
                   quantizer_dropout=0.0, rngs=nnx.Rngs(0))
  rvq.codebook[...] = jnp.array([[[0.0, 0.0], [10.0, 10.0]]])
  rvq.ema_count[...] = jnp.ones((1, 2))
  rvq.ema_sum[...] = rvq.codebook[...] * 1.0
  rvq.initialized[...] = jnp.ones((), jnp.int32)
  return rvq


def test_ema_update_on_a_hand_made_case():
  """Both points go to code 0; decay 0.5: count [1,1] -> [1.5, 0.5]; sum_0 = 0.5*0 + 0.5*(2, 2);
  code_0 = (1, 1) / 1.5; code_1 = (5, 5) / 0.5 = (10, 10) (unused codes keep their value)."""
  rvq = _one_level(threshold=0.0)
  z = jnp.array([[[1.0, 0.0], [1.0, 2.0]]])                    # [B=1, T=2, D=2]
  out = run(rvq, z, train=True, update=True)
  np.testing.assert_array_equal(np.asarray(out.codes), [[[0, 0]]])
  np.testing.assert_allclose(np.asarray(rvq.ema_count[...]), [[1.5, 0.5]])
  np.testing.assert_allclose(np.asarray(rvq.ema_sum[...]), [[[1.0, 1.0], [5.0, 5.0]]])
  np.testing.assert_allclose(np.asarray(rvq.codebook[...]), [[[2 / 3, 2 / 3], [10.0, 10.0]]],
                             rtol=1e-4)
  # Commitment: mean squared distance to code 0 = ((1 + 0) + (1 + 4)) / (2 points * 2 dims).
  assert float(out.commitment) == pytest.approx(6.0 / 4.0)
  # Straight-through: the forward value is the code, the gradient w.r.t. z is the identity.
  np.testing.assert_allclose(np.asarray(out.quantized), 0.0, atol=1e-6)
  grad = jax.grad(lambda z: jnp.sum(rvq(z).quantized * jnp.arange(4.0).reshape(1, 2, 2)))(z)
  np.testing.assert_allclose(np.asarray(grad), np.arange(4.0).reshape(1, 2, 2))


def test_dead_code_is_reseeded_from_the_batch():
  """Threshold 1: after the update code 1's count is 0.5 < 1, so it is replaced by one of the
  batch vectors and its count set to the threshold; code 0 (used) keeps its EMA value."""
  rvq = _one_level(threshold=1.0)
  z = jnp.array([[[1.0, 0.0], [1.0, 2.0]]])
  out = run(rvq, z, train=True, update=True)
  cb = np.asarray(rvq.codebook[...])[0]
  assert any(np.allclose(cb[1], v) for v in ([1.0, 0.0], [1.0, 2.0])), cb
  np.testing.assert_allclose(cb[0], [2 / 3, 2 / 3], rtol=1e-4)
  np.testing.assert_allclose(np.asarray(rvq.ema_count[...]), [[1.5, 1.0]])
  np.testing.assert_allclose(np.asarray(rvq.ema_sum[...])[0, 1], cb[1] * 1.0)
  assert float(out.metrics["rvq/dead_codes_0"]) == 1.0


def test_no_update_without_the_flag():
  rvq = _one_level(threshold=1.0)
  before = np.asarray(rvq.codebook[...])
  run(rvq, jnp.ones((1, 3, 2)), train=True, update=False)
  np.testing.assert_array_equal(np.asarray(rvq.codebook[...]), before)


def test_quantizer_dropout_uses_leading_levels_only():
  rvq = ResidualVQ(4, 16, 4, quantizer_dropout=1.0, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(0), (64, 3, 4))
  out = run(rvq, z, jax.random.PRNGKey(5), train=True)
  active = float(out.metrics["rvq/active_levels"])
  assert 1.5 < active < 3.5                     # mean of U{1..4} = 2.5
  full = run(rvq, z)                            # inference: all levels
  assert float(full.metrics["rvq/active_levels"]) == 4.0
  # An example's output is the sum of its first n_q codes; find one that used a single level.
  cb = np.asarray(rvq.codebook[...])
  codes = np.asarray(out.codes)
  q = np.asarray(out.quantized)
  single = [i for i in range(64) if np.allclose(q[i], cb[0][codes[i, 0]], atol=1e-5)]
  assert single, "some example should use level 0 only"
  np.testing.assert_allclose(np.asarray(run(rvq, z, num_levels=2).quantized),
                             np.asarray(rvq.dequantize(full.codes[:, :2])), atol=1e-5)
  with pytest.raises(ValueError, match="num_levels"):
    run(rvq, z, num_levels=5)


def test_usage_and_perplexity_metrics():
  rvq = _one_level(threshold=0.0)
  out = run(rvq, jnp.array([[[0.0, 0.0], [9.0, 9.0], [0.1, 0.0], [10.0, 10.0]]]))
  assert float(out.metrics["rvq/usage_0"]) == 1.0                 # both codes used
  assert float(out.metrics["rvq/perplexity_0"]) == pytest.approx(2.0, rel=1e-4)
