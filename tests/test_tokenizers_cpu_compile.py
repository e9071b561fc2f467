"""conv_inference_jit: same results as jax.jit, and on a CPU mesh the option takes effect: a
convolution that plain jax.jit hands to YNNPACK compiles without any YNNPACK fusion."""
import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.tokenizers.cpu_compile import conv_inference_jit


def _conv(x, k):
  return jnp.tanh(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_conv_inference_jit_same_values_without_ynnpack():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  rng = np.random.default_rng(0)
  # Large enough for XLA:CPU to pick YNNPACK by default (a 16x16x8 conv is not).
  x = jnp.asarray(rng.normal(size=(1, 32, 32, 32)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 32, 32)), jnp.float32) * 0.05
  plain, fast = jax.jit(_conv), conv_inference_jit(_conv, mesh)
  assert "__ynn_fusion" in plain.lower(x, k).compile().as_text()   # the premise
  assert "__ynn_fusion" not in fast.lower(x, k).compile().as_text()
  np.testing.assert_allclose(fast(x, k), plain(x, k), rtol=1e-4, atol=1e-5)
