"""vp_jax.nn.onednn_conv: XLA:CPU's oneDNN convolution called from JAX."""
import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.nn import onednn_conv as oc

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_onednn = pytest.mark.skipif(not oc.available(), reason="no oneDNN convolution in this XLA:CPU")


def test_available_on_x86_jaxlib():
  """The pinned jaxlib's x86 XLA:CPU runs the custom call (the check compiles and compares one)."""
  if not X86:
    pytest.skip("jaxlib's oneDNN is x86-only")
  assert oc.available()


def _lax(x, k, strides, padding):
  return oc._reference(x, k, strides=tuple(strides), padding=tuple(padding))


@needs_onednn
@pytest.mark.parametrize("x_shape,k_shape,strides,padding", [
    ((2, 5, 8, 6, 4), (3, 3, 3, 4, 7), (1, 1, 1), ((2, 0), (1, 1), (1, 1))),   # causal, SAME
    ((1, 9, 8, 7, 3), (3, 3, 3, 3, 5), (2, 2, 2), ((2, 0), (0, 1), (1, 1))),   # strided, uneven
    ((2, 3, 6, 6, 8), (1, 1, 1, 8, 2), (1, 1, 1), ((0, 0), (0, 0), (0, 0))),   # 1x1x1
    ((3, 7, 9, 5), (3, 2, 5, 4), (1, 2), ((1, 1), (0, 1))),                    # 2D
    ((2, 11, 6), (4, 6, 3), (3,), ((2, 1),)),                                  # 1D
])
def test_onednn_conv_matches_lax(x_shape, k_shape, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
  want = _lax(x, k, strides, padding)
  got = jax.jit(lambda a, b: oc.onednn_conv(a, b, strides, padding))(x, k)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
  eager = oc.onednn_conv(x, k, strides, padding)           # outside jit: the primitive's impl
  np.testing.assert_allclose(np.asarray(eager), np.asarray(got), rtol=0, atol=0)


def test_cpu_lowering_is_the_custom_call_and_other_platforms_get_lax():
  """On CPU the program holds the oneDNN custom call and no convolution; lowered for TPU or GPU
  it is a plain stablehlo convolution (so a model that holds it still lowers there)."""
  x, k = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 4, 2))
  traced = jax.jit(lambda a, b: oc.onednn_conv(a, b, (1, 1), ((1, 1), (1, 1)))).trace(x, k)
  cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
  assert cpu.count("@__onednn$convolution(") == 1 and "stablehlo.convolution" not in cpu
  for other in ("tpu", "cuda"):
    text = traced.lower(lowering_platforms=(other,)).as_text()
    assert "onednn" not in text and text.count("stablehlo.convolution") == 1


def test_backend_config_encoding():
  """XLA reads spatial dims 0-based, strides and pads as given, dilations stored + 1."""
  cfg = json.loads(oc.backend_config(3, (3, 1, 5), (1, 2, 2), ((2, 0), (0, 1), (2, 2))))
  conv = cfg["onednn_conv_config"]
  assert conv["dims"] == 5 and conv["feature_groups"] == 1
  assert conv["input"]["data"] == {"batch_dim": 0, "feature_dim": 4, "spatial_dims": [1, 2, 3]}
  assert conv["output"]["data"] == conv["input"]["data"]
  assert conv["kernel"]["filter"] == {"input_feature_dim": 3, "output_feature_dim": 4,
                                      "spatial_dims": [0, 1, 2]}
  assert conv["window"] == {"size": [3, 1, 5], "pad_left": [2, 0, 2], "pad_right": [0, 1, 2],
                            "strides": [1, 2, 2], "window_dilations": [1, 1, 1]}


def test_abstract_shapes_without_running():
  out = jax.eval_shape(lambda a, b: oc.onednn_conv(a, b, (2, 2, 2), ((2, 0), (0, 1), (0, 1))),
                       jax.ShapeDtypeStruct((4, 17, 128, 224, 3), jnp.float32),
                       jax.ShapeDtypeStruct((3, 3, 3, 3, 128), jnp.float32))
  assert out.shape == (4, 9, 64, 112, 128) and out.dtype == jnp.float32


@pytest.mark.parametrize("x,k,match", [
    (jnp.ones((2, 5, 5, 5, 4), jnp.bfloat16), jnp.ones((3, 3, 3, 4, 2), jnp.bfloat16), "float32"),
    (jnp.ones((2, 5, 5, 5, 4, 1)), jnp.ones((3, 3, 3, 3, 4, 2)), "1-3D"),
    (jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 2)), "1-3D"),
])
def test_bad_input_is_named(x, k, match):
  strides, padding = (1,) * (x.ndim - 2), ((1, 1),) * (x.ndim - 2)
  with pytest.raises(ValueError, match=match):
    oc.onednn_conv(x, k, strides, padding)


def test_env_var_turns_it_off():
  code = ("from vp_jax.nn import onednn_conv as oc; "
          "from vp_jax.models.magvit import conv; import jax.numpy as jnp; "
          "oc.use().__enter__(); "
          "print(oc.available(), conv.cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.float32))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, oc.ENV_VAR: "off", "JAX_PLATFORMS": "cpu"})
  assert out.stdout.split() == ["False", "as_2d"]


def test_use_block_decides_and_the_innermost_wins():
  from vp_jax.models.magvit import conv
  wide = lambda: conv.cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.float32)  # noqa: E731
  assert not oc.enabled() and wide() == "as_2d"                     # outside: XLA's
  with oc.use():
    assert oc.enabled() == oc.available()
    assert wide() == ("onednn" if oc.available() else "as_2d")
    with oc.use(False):
      assert not oc.enabled() and wide() == "as_2d"
    assert oc.enabled() == oc.available()
  assert not oc.enabled()


def test_available_inside_a_trace_under_a_mesh_of_several_devices():
  """The once-per-process check runs in its own thread: a first call from inside a jit trace under
  an 8-device mesh (a sharded encode) gets the same answer as a plain call."""
  oc.available.cache_clear()
  try:
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    seen = []
    with jax.set_mesh(mesh):
      jax.jit(lambda a: seen.append(oc.available()) or a)(jnp.ones(8))
    assert seen == [X86]
  finally:
    oc.available.cache_clear()


@pytest.mark.multiprocess
def test_two_processes_agree_and_match_xla(tmp_path):
  """Two jax processes on localhost (the multi-host path): both find oneDNN available (the check
  uses the process's own CPU device, not the global device 0 of process 0), and the tokenizer's
  codes and frames over the shared mesh equal those of XLA's convolutions."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0",
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
  proc = subprocess.run(
      [sys.executable, os.path.join(repo, "launch", "local_multiprocess.py"), "--num_processes",
       "2", "--timeout", "240", "--", sys.executable,
       os.path.join(repo, "tests", "multiprocess_tokenizer_worker.py")],
      env=env, capture_output=True, text=True, timeout=300, cwd=repo)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  results = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines()
             if "RESULT " in line]
  assert sorted(r["process"] for r in results) == [0, 1]
  for r in results:
    assert r["processes"] == 2 and r["available"] == X86
    assert r["ids_shape"] == [4, 3, 2, 2] and r["ids_equal"]
    assert r["frames_max_diff"] < 1e-4
