"""vp_jax.nn.layers.project: the flattened matmul equals the einsum it replaces, forward and
backward, for one and two contracted axes; mismatched axes raise."""
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
