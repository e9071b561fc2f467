"""vp_jax.nn.conv2d: the same outputs and gradients as lax.conv_general_dilated (its kernel
gradient is computed differently: per-tap matmuls), for the strides, kernel sizes and SAME-style
asymmetric paddings the MAGVIT convolutions use; bad shapes raise."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.nn import conv2d as conv2d_module
from vp_jax.nn.conv2d import conv2d


@pytest.fixture(autouse=True)
def _always_per_tap(monkeypatch):
  """The tests' convolutions are small: force the per-tap backward for all of them."""
  monkeypatch.setattr(conv2d_module, "PER_TAP_MIN_FLOPS", 0)


def _reference(x, k, strides, padding):
  return jax.lax.conv_general_dilated(x, k, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kernel,strides,padding,hw", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (8, 8)),
    ((3, 3), (2, 2), ((0, 1), (0, 1)), (8, 6)),     # SAME padding of a stride-2 conv (asymmetric)
    ((1, 1), (1, 1), ((0, 0), (0, 0)), (5, 7)),
    ((4, 4), (2, 2), ((1, 1), (1, 1)), (9, 9)),     # odd size: the last row/column is not read
])
def test_conv2d_matches_lax_forward_and_gradients(kernel, strides, padding, hw):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, *hw, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 3, 5)), jnp.float32)
  y = conv2d(x, k, strides, padding)
  want = _reference(x, k, strides, padding)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  cot = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  got = jax.grad(lambda x, k: jnp.sum(conv2d(x, k, strides, padding) * cot), (0, 1))(x, k)
  ref = jax.grad(lambda x, k: jnp.sum(_reference(x, k, strides, padding) * cot), (0, 1))(x, k)
  for a, b in zip(got, ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv2d_under_jit_and_bfloat16():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 6, 6, 4)), jnp.bfloat16)
  k = jnp.asarray(rng.normal(size=(3, 3, 4, 2)), jnp.bfloat16)
  dk = jax.jit(jax.grad(lambda k: jnp.sum(conv2d(x, k, (1, 1), ((1, 1), (1, 1)))
                                          .astype(jnp.float32)))) (k)
  ref = jax.grad(lambda k: jnp.sum(_reference(x.astype(jnp.float32), k, (1, 1),
                                              ((1, 1), (1, 1)))))(k.astype(jnp.float32))
  assert dk.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dk, np.float32), ref, rtol=2e-2, atol=2e-1)


def test_small_convolutions_take_the_plain_path(monkeypatch):
  x, k = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 2))
  jaxpr = lambda: str(jax.make_jaxpr(lambda k: conv2d(x, k, (1, 1), ((1, 1), (1, 1))))(k))
  assert "custom_vjp" in jaxpr()
  monkeypatch.setattr(conv2d_module, "PER_TAP_MIN_FLOPS", 2 * 36 * 4 * 2 * 9 + 1)   # > this conv
  assert "custom_vjp" not in jaxpr()


def test_conv2d_rejects_mismatched_channels():
  with pytest.raises(ValueError, match="same C"):
    conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 5)), (1, 1), ((1, 1), (1, 1)))
