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
needs_bf16 = pytest.mark.skipif(not oc.available("bfloat16"),
                                reason="no fast oneDNN bfloat16 convolution on this CPU")


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


@needs_bf16
@pytest.mark.parametrize("x_shape,k_shape,strides,padding", [
    ((2, 5, 8, 6, 16), (3, 3, 3, 16, 24), (1, 1, 1), ((2, 0), (1, 1), (1, 1))),
    ((1, 9, 8, 7, 8), (3, 3, 3, 8, 16), (2, 2, 2), ((2, 0), (0, 1), (1, 1))),
    ((3, 7, 9, 32), (3, 2, 32, 4), (1, 2), ((1, 1), (0, 1))),
])
def test_bfloat16_operands_sum_in_float32(x_shape, k_shape, strides, padding):
  """bfloat16 operands, float32 result: float32 sums of the rounded operands (as a TPU's default
  precision), measurably off the float32 conv of the unrounded ones; a bfloat16 result is that
  sum rounded."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
  xb, kb = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
  got = jax.jit(lambda a, b: oc.onednn_conv(a, b, strides, padding, jnp.float32))(xb, kb)
  assert got.dtype == jnp.float32
  rounded = _lax(xb.astype(jnp.float32), kb.astype(jnp.float32), strides, padding)
  exact = _lax(x, k, strides, padding)
  scale = float(jnp.max(jnp.abs(exact)))
  assert float(jnp.max(jnp.abs(got - rounded))) < 2e-5 * scale
  assert float(jnp.max(jnp.abs(got - exact))) > 1e-3 * scale        # the rounding is real
  got16 = jax.jit(lambda a, b: oc.onednn_conv(a, b, strides, padding))(xb, kb)
  assert got16.dtype == jnp.bfloat16
  # the float32 sum rounded to bfloat16: within half a bfloat16 step of it, and equal to its
  # rounding except where another summation order (a kernel chosen for the bfloat16 result) lands
  # on the other side of a rounding boundary
  got16, got = np.asarray(got16.astype(jnp.float32)), np.asarray(got)
  np.testing.assert_allclose(got16, got, rtol=2.0 ** -8, atol=1e-6 * scale)
  assert np.mean(got16 != np.asarray(jnp.asarray(got).astype(jnp.bfloat16).astype(jnp.float32))) \
      < 0.01


def test_bfloat16_available_exactly_where_the_cpu_has_the_instructions():
  assert oc.available("bfloat16") == (X86 and oc.cpu_has_fast_bfloat16())
  assert oc.available(jnp.bfloat16) == oc.available("bfloat16")
  with pytest.raises(ValueError, match="operands 'float16'; use one of"):
    oc.available("float16")


def test_bfloat16_not_available_without_the_cpu_instructions(monkeypatch, caplog):
  monkeypatch.setattr(oc, "cpu_has_fast_bfloat16", lambda: False)
  oc.available.cache_clear()
  try:
    assert not oc.available("bfloat16")
    assert "oneDNN bfloat16 convolutions not used: this CPU has none of" in caplog.text
    with oc.use(operands="bfloat16"):                  # float32 operands, where oneDNN runs them
      assert oc.operand_dtype() == ("float32" if oc.available() else None)
  finally:
    oc.available.cache_clear()


@pytest.mark.parametrize("flags,want", [("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),
                                        ("fpu avx2 amx_bf16 amx_tile", True),
                                        ("fpu sse avx2 avx512f avx512bw", False)])
def test_cpu_has_fast_bfloat16_reads_the_flags_line(tmp_path, flags, want):
  f = tmp_path / "cpuinfo"
  f.write_text(f"processor\t: 0\nmodel name\t: Some CPU bf16\nflags\t\t: {flags}\n\n"
               f"processor\t: 1\nflags\t\t: {flags}\n")
  assert oc.cpu_has_fast_bfloat16(str(f)) is want
  assert oc.cpu_has_fast_bfloat16(str(tmp_path / "missing")) is False


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
  # bfloat16 operands, float32 result: the same on every platform
  mixed = jax.jit(lambda a, b: oc.onednn_conv(a, b, (1, 1), ((1, 1), (1, 1)), jnp.float32)).trace(
      x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  cpu = mixed.lower(lowering_platforms=("cpu",)).as_text()
  assert "(tensor<1x5x5x4xbf16>, tensor<3x3x4x2xbf16>) -> tensor<1x5x5x2xf32>" in cpu
  tpu = mixed.lower(lowering_platforms=("tpu",)).as_text()
  assert "onednn" not in tpu and "-> tensor<1x5x5x2xf32>" in tpu


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
  out = jax.eval_shape(lambda a, b: oc.onednn_conv(a, b, (1, 1, 1), ((2, 0), (1, 1), (1, 1)),
                                                   jnp.float32),
                       jax.ShapeDtypeStruct((1, 5, 16, 16, 64), jnp.bfloat16),
                       jax.ShapeDtypeStruct((3, 3, 3, 64, 8), jnp.bfloat16))
  assert out.shape == (1, 5, 16, 16, 8) and out.dtype == jnp.float32


@pytest.mark.parametrize("x,k,out,match", [
    (jnp.ones((2, 5, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 2), jnp.bfloat16), None,
     "both float32 or both bfloat16, the result one of those; got float32 / bfloat16"),
    (jnp.ones((2, 5, 5, 4), jnp.float16), jnp.ones((3, 3, 4, 2), jnp.float16), None, "float16"),
    (jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 4, 2)), jnp.int32, "-> int32"),
    (jnp.ones((2, 5, 5, 5, 4, 1)), jnp.ones((3, 3, 3, 3, 4, 2)), None, "1-3D"),
    (jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 2)), None, "1-3D"),
])
def test_bad_input_is_named(x, k, out, match):
  strides, padding = (1,) * (x.ndim - 2), ((1, 1),) * (x.ndim - 2)
  with pytest.raises(ValueError, match=match):
    oc.onednn_conv(x, k, strides, padding, out)


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
  f32 = "float32" if oc.available() else None
  assert oc.operand_dtype() is None and wide() == "as_2d"           # outside: XLA's
  with oc.use():
    assert oc.operand_dtype() == f32
    assert wide() == ("onednn" if oc.available() else "as_2d")
    with oc.use(False):
      assert oc.operand_dtype() is None and wide() == "as_2d"
    assert oc.operand_dtype() == f32
  assert oc.operand_dtype() is None


def test_use_operands_decide_the_operand_dtype():
  from vp_jax.models.magvit import conv
  lowering = lambda dtype: conv.cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), dtype)  # noqa: E731
  f32 = "float32" if oc.available() else None
  bf16 = "bfloat16" if oc.available("bfloat16") else f32
  names = {None: "as_2d", "float32": "onednn", "bfloat16": "onednn_bf16"}
  assert oc.operand_dtype() is None
  with oc.use(operands="bfloat16"):
    assert oc.operand_dtype() == bf16 and lowering(jnp.float32) == names[bf16]
    with oc.use():
      assert oc.operand_dtype() == f32 and lowering(jnp.float32) == names[f32]
      # a bfloat16 model's convolutions take bfloat16 operands wherever oneDNN runs them
      assert lowering(jnp.bfloat16) == ("onednn_bf16" if oc.available("bfloat16") else "as_2d")
    with oc.use(False, "bfloat16"):
      assert oc.operand_dtype() is None and lowering(jnp.bfloat16) == "as_2d"
    assert oc.operand_dtype() == bf16
  assert oc.operand_dtype() is None and lowering(jnp.bfloat16) == "as_2d"
  with pytest.raises(ValueError, match="operands 'int8'; use one of"):
    with oc.use(operands="int8"):
      pass
  assert oc.operand_dtype() is None


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
