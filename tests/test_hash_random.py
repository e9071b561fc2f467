"""vp_jax.nn.hash_random: deterministic, key-dependent, uniform with the right moments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.nn import hash_random


def test_uniform_moments_and_determinism():
  key = jax.random.PRNGKey(3)
  u = np.asarray(hash_random.uniform(key, (200, 500)))
  assert u.shape == (200, 500) and u.min() >= 0.0 and u.max() < 1.0
  assert u.mean() == pytest.approx(0.5, abs=0.005)
  assert u.var() == pytest.approx(1 / 12, rel=0.02)
  np.testing.assert_array_equal(u, np.asarray(hash_random.uniform(key, (200, 500))))
  other = np.asarray(hash_random.uniform(jax.random.PRNGKey(4), (200, 500)))
  assert abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]) < 0.01
  # Neighbouring positions are uncorrelated.
  assert abs(np.corrcoef(u.ravel()[:-1], u.ravel()[1:])[0, 1]) < 0.01
  typed = hash_random.uniform(jax.random.key(3), (4,))
  assert typed.shape == (4,)


def test_lecun_uniform_variance():
  w = np.asarray(hash_random.lecun_uniform()(jax.random.PRNGKey(0), (7, 32, 64)))
  assert w.var() == pytest.approx(1 / (7 * 32), rel=0.05)
  assert np.abs(w).max() <= np.sqrt(3 / (7 * 32))
  w = hash_random.lecun_uniform(10)(jax.random.PRNGKey(0), (3, 5), jnp.bfloat16)
  assert w.dtype == jnp.bfloat16
