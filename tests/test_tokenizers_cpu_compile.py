"""conv_inference_jit: same results as jax.jit, and on a CPU mesh the compiled function carries
no YNNPACK fusion (the option took effect)."""
import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.tokenizers.cpu_compile import CONV_INFERENCE_OPTIONS, conv_inference_jit


def _conv(x, k):
  return jnp.tanh(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_conv_inference_jit_same_values_without_ynnpack():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)
  fast = conv_inference_jit(_conv, mesh)
  np.testing.assert_allclose(fast(x, k), jax.jit(_conv)(x, k), rtol=1e-4, atol=1e-5)
  hlo = fast.lower(x, k).compile().as_text()
  assert "__ynn_fusion" not in hlo
  assert CONV_INFERENCE_OPTIONS == {"xla_cpu_experimental_ynn_fusion_type": ""}
