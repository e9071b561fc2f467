"""conv_inference_jit: same results as jax.jit, and on a CPU mesh the option takes effect: a
convolution that plain jax.jit hands to YNNPACK compiles without any YNNPACK fusion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_conv_inference_jit_with_batch_axes_runs_each_shard_on_its_own():
  """With oneDNN and batch_axes, fn(params, x) is traced per batch shard (shard_map over the
  8-device mesh): it sees 1 of the 8 clips, and the result is plain jit's."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  seen = []

  def fn(params, x):
    seen.append(x.shape[0])
    return jnp.tanh(x * params["w"]).sum(axis=1)                   # [B, 3]

  params = {"w": jnp.float32(0.5)}
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4, 3)), jnp.float32)
  xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  with jax.set_mesh(mesh):
    got = conv_inference_jit(fn, mesh, "onednn", batch_axes=("data",))(params, xs)
  assert seen == [1] and got.shape == (8, 3)
  np.testing.assert_allclose(np.asarray(got), np.asarray(jnp.tanh(x * 0.5).sum(axis=1)),
                             rtol=1e-6)
  seen.clear()
  with jax.set_mesh(mesh):
    conv_inference_jit(fn, mesh, "onednn_bf16", batch_axes=("data",))(params, xs)
  assert seen == [1]
  seen.clear()
  with jax.set_mesh(mesh):
    conv_inference_jit(fn, mesh, "xla", batch_axes=("data",))(params, xs)
  assert seen == [8]                                   # XLA's convs: plain jit, whole batch


def test_conv_inference_jit_traces_with_the_asked_conv_operands():
  """`convs` sets what MAGVIT's convolutions see while fn is traced: oneDNN with float32 or
  bfloat16 operands (each where this CPU has it), or XLA's."""
  from vp_jax.nn import onednn_conv
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  seen = []

  def fn(x):
    seen.append(onednn_conv.operand_dtype())
    return x + 1

  for convs in ("onednn", "onednn_bf16", "xla"):
    conv_inference_jit(fn, mesh, convs)(jnp.ones(3))
  f32 = "float32" if onednn_conv.available() else None
  assert seen == [f32, "bfloat16" if onednn_conv.available("bfloat16") else f32, None]
  assert onednn_conv.operand_dtype() is None                        # nothing left set
  with pytest.raises(ValueError, match=r"convs='mkl'; use one of \('onednn', 'onednn_bf16', 'xla'\)"):
    conv_inference_jit(fn, mesh, "mkl")


def test_conv_operand_params_rounds_conv_kernels_once_for_bfloat16_operands():
  """With convs="onednn_bf16" on a CPU that runs bfloat16 convolutions, every 5-D "kernel" leaf
  becomes bfloat16 (the same rounding the traced conv would do) and nothing else changes; with
  any other `convs`, or where bfloat16 operands do not run, the params come back as they were."""
  from vp_jax.nn import onednn_conv
  from vp_jax.tokenizers.cpu_compile import conv_operand_params
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  k = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 3, 4, 8)), jnp.float32)
  params = {"conv": {"kernel": k, "bias": jnp.ones(8)}, "proj": {"kernel": jnp.ones((4, 8))},
            "scale": jnp.ones(8)}
  for convs in ("onednn", "xla"):
    assert conv_operand_params(params, mesh, convs) is params
  got = conv_operand_params(params, mesh, "onednn_bf16")
  if not onednn_conv.available("bfloat16"):
    assert got is params
    return
  assert got["conv"]["kernel"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got["conv"]["kernel"], np.float32),
                                np.asarray(k.astype(jnp.bfloat16), np.float32))
  assert np.abs(np.asarray(got["conv"]["kernel"], np.float32) - np.asarray(k)).max() > 0
  for path in (("conv", "bias"), ("proj", "kernel"), ("scale",)):
    a, b = got, params
    for key in path:
      a, b = a[key], b[key]
    assert a.dtype == jnp.float32 and a is b
