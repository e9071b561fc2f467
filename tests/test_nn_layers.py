"""vp_jax.nn.layers.project: the flattened matmul equals the einsum it replaces, forward and
backward, for one and two contracted axes; mismatched axes raise. vp_jax.nn.rotary on its own."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.nn import layers


def _arrays(shape_x, shape_w, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=shape_x), jnp.float32),
          jnp.asarray(rng.normal(size=shape_w), jnp.float32))


@pytest.mark.parametrize("contract,shape_x,shape_w,spec", [
    (1, (2, 5, 6), (6, 3, 4), "bld,dhk->blhk"),      # query projection: D -> H x K
    (2, (2, 5, 3, 4), (3, 4, 6), "blhk,hkd->bld"),   # output projection: H x K -> D
    (1, (7, 6), (6, 9), "nd,df->nf"),                # already 2D
])
def test_project_matches_einsum_forward_and_gradients(contract, shape_x, shape_w, spec):
  x, w = _arrays(shape_x, shape_w)
  got = layers.project(x, w, contract)
  want = jnp.einsum(spec, x, w)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  cot = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
  g_got = jax.grad(lambda x, w: jnp.sum(layers.project(x, w, contract) * cot), (0, 1))(x, w)
  g_want = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w) * cot), (0, 1))(x, w)
  for a, b in zip(g_got, g_want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_project_rejects_mismatched_axes():
  x, w = _arrays((2, 5, 6), (5, 6, 3))
  with pytest.raises(ValueError, match=r"do not contract over 1 axes"):
    layers.project(x, w)


def test_apply_rotary():
  """RoPE: position 0 is the identity, norms are kept, q.k depends on the offset only, and the
  first frequency pair rotates by exactly the position (in radians)."""
  from vp_jax.nn.rotary import apply_rotary
  rng = np.random.default_rng(5)
  q = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)

  def at(x, p):
    return np.asarray(apply_rotary(x, jnp.asarray([[p]])))[0, 0]

  np.testing.assert_allclose(at(q, 0), np.asarray(q)[0, 0], atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(at(q, 37), axis=-1),
                             np.linalg.norm(np.asarray(q)[0, 0], axis=-1), rtol=1e-5)
  dots = [np.sum(at(q, p + 3) * at(k, p), -1) for p in (0, 11, 250)]
  np.testing.assert_allclose(dots[1], dots[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dots[2], dots[0], rtol=1e-4, atol=1e-5)
  x = np.zeros((1, 1, 1, 4), np.float32)
  x[..., 0] = 1.0                                   # (x1[0], x2[0]) = (1, 0): frequency 1
  np.testing.assert_allclose(at(jnp.asarray(x), 2)[0], [np.cos(2), 0, np.sin(2), 0], atol=1e-6)
