"""Direct unit tests of the text-encoder conversion helpers (convert_common, convert_hf,
convert_t5x), `params_fingerprint`, `TextEncoder.encode_ids` and `T5Encoder.position_bias`.

Everything is in memory or in tmp_path with a tiny config whose attention inner width (32) differs
from d_model (24), so a missing or wrong transpose/reshape shows up as a shape or value error.
"""
import dataclasses
import hashlib
import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from vp_jax.text import convert_hf, convert_t5x
from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.convert_common import (CheckpointConversionError, Reader, assemble, flatten,
                                        global_shapes, layer_shapes, unflatten)
from vp_jax.text.encoder import TextEncoder, params_fingerprint
from vp_jax.text.model import T5Encoder, apply_fn

# d=24, H=4, K=8 (inner 32), F=40, V=50, 2 layers, 8 buckets up to distance 20.
CFG = T5EncoderConfig(name="unit", vocab_size=50, d_model=24, num_heads=4, head_dim=8, d_ff=40,
                      num_layers=2, num_buckets=8, max_distance=20)

LAYER_SHAPES = {"attn_norm/scale": (24,), "q": (24, 4, 8), "k": (24, 4, 8), "v": (24, 4, 8),
                "o": (4, 8, 24), "mlp_norm/scale": (24,), "wi_0": (24, 40), "wi_1": (24, 40),
                "wo": (40, 24)}
GLOBAL_SHAPES = {"token_embed": (50, 24), "rel_bias": (8, 4), "final_norm/scale": (24,)}


def _params(seed: int = 0) -> dict:
  """Pure-dict T5Encoder params for CFG with distinct random float32 values in every leaf."""
  rng = np.random.default_rng(seed)
  flat = {name: rng.standard_normal(shape).astype(np.float32)
          for name, shape in GLOBAL_SHAPES.items()}
  for name, shape in LAYER_SHAPES.items():
    flat["layers/" + name] = rng.standard_normal((CFG.num_layers,) + shape).astype(np.float32)
  return unflatten(flat)


# ----------------------------------------------------------------------------- convert_common


def test_layer_and_global_shapes_exact():
  assert layer_shapes(CFG) == LAYER_SHAPES
  assert list(layer_shapes(CFG)) == list(LAYER_SHAPES)  # the order assemble stacks in
  assert global_shapes(CFG) == GLOBAL_SHAPES


def test_layer_and_global_shapes_match_the_model_parameters():
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: T5Encoder(CFG, rngs=nnx.Rngs(0)))
  model = {k: tuple(v.shape) for k, v in
           flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))).items()}
  expected = dict(GLOBAL_SHAPES)
  expected.update({"layers/" + k: (2,) + s for k, s in LAYER_SHAPES.items()})
  assert model == expected


def test_flatten_exact_keys_and_unflatten_round_trip():
  leaf_a, leaf_b = np.arange(3), np.ones((2, 2))
  tree = {"token_embed": leaf_a, "layers": {"attn_norm": {"scale": leaf_b}, "q": 5},
          "final_norm": {"scale": "s"}}
  flat = flatten(tree)
  assert flat == {"token_embed": leaf_a, "layers/attn_norm/scale": leaf_b, "layers/q": 5,
                  "final_norm/scale": "s"}
  assert flat["layers/attn_norm/scale"] is leaf_b  # leaves are not copied
  assert list(flat) == ["token_embed", "layers/attn_norm/scale", "layers/q", "final_norm/scale"]
  assert unflatten(flat) == tree
  assert flatten(tree, prefix="p/") == {"p/" + k: v for k, v in flat.items()}
  assert unflatten({"a/b/c": 1, "a/b/d": 2, "a/e": 3, "f": 4}) == {
      "a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4}
  # is_leaf keeps a mapping whole (T5X's TensorStore specs are dicts standing for one array).
  spec = {"driver": "zarr", "kvstore": {"path": "x"}}
  assert flatten({"a": {"k": spec, "b": {"c": 1}}}, is_leaf=lambda m: "driver" in m) == {
      "a/k": spec, "a/b/c": 1}
  assert flatten({"a": {"k": spec}}) == {"a/k/driver": "zarr", "a/k/kvstore/path": "x"}


def test_reader_has_shape_and_get():
  arr = np.arange(6, dtype=np.float32).reshape(2, 3)
  r = Reader({"a.w": arr, "a.list": [[1.0, 2.0]]}, where="ckpt.bin")
  assert r.has("a.w") and not r.has("a.x")
  assert r.shape("a.w") == (2, 3)
  assert r.shape("a.list") == (1, 2)  # no .shape attribute: np.shape
  assert r.used == set()
  out = r.get("a.w", (2, 3))  # a single shape
  np.testing.assert_array_equal(out, arr)
  assert out.dtype == np.float32
  assert r.used == {"a.w"}
  np.testing.assert_array_equal(r.get("a.list", [(3, 2), (1, 2)]), [[1.0, 2.0]])  # one of many
  assert r.used == {"a.w", "a.list"}


def test_reader_loads_lazily_through_load():
  calls = []

  class Lazy:
    shape = (2,)

  def load(x):
    calls.append(x)
    return np.array([1.5, 2.5], np.float32)

  lazy = Lazy()
  r = Reader({"x": lazy}, "lazy-ckpt", load=load)
  assert r.shape("x") == (2,) and calls == []  # shape from the attribute, nothing read
  np.testing.assert_array_equal(r.get("x", (2,)), [1.5, 2.5])
  assert calls == [lazy]


def test_reader_missing_parameter_message_names_key_shape_and_near_keys():
  arrays = {"encoder.a": np.zeros(1, np.float32), "encoder.b": np.zeros(1, np.float32),
            "decoder.c": np.zeros(1, np.float32)}
  r = Reader(arrays, "/ck/model.safetensors")
  msg = ("/ck/model.safetensors: missing parameter 'encoder.z' (expected shape (3,)); the "
         "checkpoint has 3 arrays, e.g. ['encoder.a', 'encoder.b'].")
  with pytest.raises(CheckpointConversionError, match="^" + re.escape(msg) + "$"):
    r.get("encoder.z", (3,))
  # No key shares the first component: the first 5 keys (sorted) instead.
  msg = ("where: missing parameter 'zzz' (expected shape (3,) or (4, 5)); the checkpoint has 3 "
         "arrays, e.g. ['decoder.c', 'encoder.a', 'encoder.b'].")
  with pytest.raises(CheckpointConversionError, match="^" + re.escape(msg) + "$"):
    Reader(arrays, "where").get("zzz", [(3,), (4, 5)])
  # '/'-separated names (T5X) are matched on their first '/' component.
  r = Reader({"encoder/x": np.zeros(1), "token_embedder/embedding": np.zeros(1)}, "t5x")
  with pytest.raises(CheckpointConversionError, match=re.escape("e.g. ['encoder/x']")):
    r.get("encoder/y", (1,))


def test_reader_rejects_wrong_shape_int_dtype_and_non_finite():
  r = Reader({"w": np.zeros((2, 3), np.float32), "i": np.zeros(3, np.int32),
              "n": np.array([1.0, np.nan], np.float32)}, "ck")
  msg = ("ck: parameter 'w' has shape (2, 3), expected (3, 2) or (6,) for the configured "
         "encoder; the checkpoint and the config disagree.")
  with pytest.raises(CheckpointConversionError, match="^" + re.escape(msg) + "$"):
    r.get("w", [(3, 2), (6,)])
  with pytest.raises(CheckpointConversionError,
                     match=r"^ck: parameter 'i' has dtype int32, expected floating point\.$"):
    r.get("i", (3,))
  with pytest.raises(CheckpointConversionError,
                     match=r"^ck: parameter 'n' has non-finite values\.$"):
    r.get("n", (2,))
  assert r.used == {"i", "n"}  # marked used once the shape matched (dtype checked after)


def test_reader_and_convert_accept_bfloat16_checkpoints():
  params = _params(8)
  arrays = {k: v.astype(ml_dtypes.bfloat16)
            for k, v in convert_hf.to_hf_arrays(params, CFG).items()}
  back = flatten(convert_hf.convert(arrays, CFG))
  np.testing.assert_array_equal(
      back["token_embed"], params["token_embed"].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_reader_get_scalar_shape():
  r = Reader({"s": np.float32(2.0)}, "ck")
  assert float(r.get("s", ())) == 2.0


def test_check_no_extra_raises_with_exact_message_and_honours_ignore():
  z = np.zeros(1, np.float32)
  arrays = {f"encoder.block.{i}.w": z for i in range(8)}
  arrays.update({"decoder.x": z, "encoder.embed_tokens.weight": z})
  r = Reader(arrays, "ck")
  r.get("encoder.block.0.w", (1,))
  r.get("encoder.block.1.w", (1,))
  msg = ("ck: encoder parameter(s) ['encoder.block.2.w', 'encoder.block.3.w', 'encoder.block.4.w', "
         "'encoder.block.5.w', 'encoder.block.6.w'] have no place in the configured encoder "
         "(7 unused); does the config's num_layers / MLP type match?")
  with pytest.raises(CheckpointConversionError, match="^" + re.escape(msg) + "$"):
    r.check_no_extra(("encoder.",))
  with pytest.raises(CheckpointConversionError, match=r"\['encoder\.block\.2\.w'.*\(6 unused\)"):
    r.check_no_extra(("encoder.",), ignore=lambda k: k == "encoder.embed_tokens.weight")
  with pytest.raises(CheckpointConversionError, match=r"\['decoder\.x'\].*\(1 unused\)"):
    r.check_no_extra(["decoder."])
  for i in range(2, 8):
    r.get(f"encoder.block.{i}.w", (1,))
  assert r.check_no_extra(("encoder.",), ignore=lambda k: "embed" in k) is None
  assert r.check_no_extra(("nothing/",)) is None


def test_assemble_stacks_layers_nests_and_casts():
  flat = flatten(_params(1))
  globals_ = {k: flat[k] for k in GLOBAL_SHAPES}
  per_layer = [{k: flat["layers/" + k][i] for k in LAYER_SHAPES} for i in range(2)]
  out = assemble(CFG, globals_, per_layer)
  out_flat = flatten(out)
  assert set(out) == {"token_embed", "rel_bias", "final_norm", "layers"}
  assert sorted(out_flat) == sorted(flat)
  for name, value in flat.items():
    assert out_flat[name].shape == value.shape and out_flat[name].dtype == np.float32, name
    np.testing.assert_array_equal(out_flat[name], value, err_msg=name)
    assert out_flat[name].flags.c_contiguous
  # Per-layer order is kept: layer 1's wo lands at index 1 of the stack.
  np.testing.assert_array_equal(out["layers"]["wo"][1], per_layer[1]["wo"])
  # param_dtype bfloat16: every leaf stored as bfloat16, float64 input accepted.
  bf = assemble(dataclasses.replace(CFG, param_dtype="bfloat16"),
                {k: v.astype(np.float64) for k, v in globals_.items()}, per_layer)
  assert {v.dtype for v in flatten(bf).values()} == {np.dtype(ml_dtypes.bfloat16)}
  np.testing.assert_array_equal(bf["rel_bias"], globals_["rel_bias"].astype(ml_dtypes.bfloat16))


def test_assemble_errors():
  flat = flatten(_params(1))
  globals_ = {k: flat[k] for k in GLOBAL_SHAPES}
  per_layer = [{k: flat["layers/" + k][i] for k in LAYER_SHAPES} for i in range(2)]
  with pytest.raises(CheckpointConversionError, match=r"^expected 2 layers, got 1\.$"):
    assemble(CFG, globals_, per_layer[:1])
  bad = [dict(per_layer[0]), dict(per_layer[1], wo=per_layer[1]["wo"].T)]
  with pytest.raises(CheckpointConversionError,
                     match=r"^layer 1 wo: converted shape \(24, 40\) != \(40, 24\)\.$"):
    assemble(CFG, globals_, bad)
  with pytest.raises(CheckpointConversionError,
                     match=r"^rel_bias: converted shape \(4, 8\) != \(8, 4\)\.$"):
    assemble(CFG, dict(globals_, rel_bias=globals_["rel_bias"].T), per_layer)


# ----------------------------------------------------------------------------- convert_hf


def test_is_hf_checkpoint(tmp_path):
  for name in ("w.safetensors", "w.bin", "w.pt", "w.pth", "w.json", "spiece.model"):
    (tmp_path / name).write_bytes(b"")
  for name in ("w.safetensors", "w.bin", "w.pt", "w.pth"):
    assert convert_hf.is_hf_checkpoint(tmp_path / name), name
    assert convert_hf.is_hf_checkpoint(str(tmp_path / name)), name
  assert not convert_hf.is_hf_checkpoint(tmp_path / "w.json")
  assert not convert_hf.is_hf_checkpoint(tmp_path / "spiece.model")
  assert not convert_hf.is_hf_checkpoint(tmp_path / "missing.safetensors")  # no such file
  assert not convert_hf.is_hf_checkpoint(tmp_path)  # a directory without a weights file
  for name in convert_hf.WEIGHT_FILES:
    d = tmp_path / ("dir_" + name)
    d.mkdir()
    assert not convert_hf.is_hf_checkpoint(d)
    (d / name).write_bytes(b"")
    assert convert_hf.is_hf_checkpoint(d), name


def test_to_hf_arrays_names_shapes_and_layout():
  params = _params(2)
  out = convert_hf.to_hf_arrays(params, CFG)
  expected = {"shared.weight": (50, 24), "encoder.final_layer_norm.weight": (24,),
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (8, 4)}
  for i in range(2):
    a, m = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
    expected.update({a + "layer_norm.weight": (24,), a + "SelfAttention.q.weight": (32, 24),
                     a + "SelfAttention.k.weight": (32, 24), a + "SelfAttention.v.weight": (32, 24),
                     a + "SelfAttention.o.weight": (24, 32), m + "layer_norm.weight": (24,),
                     m + "DenseReluDense.wi_0.weight": (40, 24),
                     m + "DenseReluDense.wi_1.weight": (40, 24),
                     m + "DenseReluDense.wo.weight": (24, 40)})
  assert {k: v.shape for k, v in out.items()} == expected
  assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in out.values())
  lay = params["layers"]
  # torch Linear [out, in]: q.weight[h * K + k, d] == q[layer][d, h, k]; o.weight[d, h*K+k] == o.
  q1 = out["encoder.block.1.layer.0.SelfAttention.q.weight"]
  assert q1[2 * 8 + 5, 7] == lay["q"][1, 7, 2, 5]
  o0 = out["encoder.block.0.layer.0.SelfAttention.o.weight"]
  assert o0[11, 3 * 8 + 1] == lay["o"][0, 3, 1, 11]
  np.testing.assert_array_equal(out["encoder.block.1.layer.1.DenseReluDense.wo.weight"],
                                lay["wo"][1].T)
  np.testing.assert_array_equal(out["encoder.block.0.layer.1.layer_norm.weight"],
                                lay["mlp_norm"]["scale"][0])
  np.testing.assert_array_equal(out["shared.weight"], params["token_embed"])
  np.testing.assert_array_equal(
      out["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
      params["rel_bias"])  # same [buckets, heads] layout, no transpose


def test_to_hf_arrays_round_trips_through_convert_and_casts_bf16_to_f32():
  params = _params(3)
  back = convert_hf.convert(convert_hf.to_hf_arrays(params, CFG), CFG)
  for name, value in flatten(params).items():
    np.testing.assert_array_equal(flatten(back)[name], value, err_msg=name)
  bf = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params)
  out = convert_hf.to_hf_arrays(bf, CFG)
  assert out["shared.weight"].dtype == np.float32
  np.testing.assert_array_equal(out["shared.weight"],
                                params["token_embed"].astype(ml_dtypes.bfloat16).astype(np.float32))


# ----------------------------------------------------------------------------- convert_t5x


def test_find_checkpoint_and_is_t5x_checkpoint(tmp_path):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError, match=r"nope: no such T5X checkpoint\.$"):
    convert_t5x.find_checkpoint(missing)
  assert not convert_t5x.is_t5x_checkpoint(missing)

  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError,
                     match=r"empty: no T5X checkpoint "
                     r"\(no 'checkpoint' file, no checkpoint_N\)\.$"):
    convert_t5x.find_checkpoint(empty)
  assert not convert_t5x.is_t5x_checkpoint(empty)

  model = tmp_path / "model"
  for step in (5, 20, 1000):
    (model / f"checkpoint_{step}").mkdir(parents=True)
    (model / f"checkpoint_{step}" / "checkpoint").write_bytes(b"")
  (model / "checkpoint_99.tmp-123").mkdir()  # an unfinished save: not a step
  (model / "checkpoint_x").mkdir()
  # Numerically latest (1000), not lexicographically (5).
  assert convert_t5x.find_checkpoint(model) == str(model / "checkpoint_1000")
  assert convert_t5x.find_checkpoint(str(model), step=20) == str(model / "checkpoint_20")
  with pytest.raises(FileNotFoundError, match=r"model: no checkpoint_7 \(steps: \[5, 20, 1000\]\)"):
    convert_t5x.find_checkpoint(model, step=7)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint_99 \(steps"):
    convert_t5x.find_checkpoint(model, step=99)
  assert convert_t5x.is_t5x_checkpoint(model)
  # The step folder itself, and its msgpack file.
  step_dir = model / "checkpoint_20"
  assert convert_t5x.find_checkpoint(step_dir) == str(step_dir)
  assert convert_t5x.find_checkpoint(step_dir / "checkpoint") == str(step_dir)
  assert convert_t5x.is_t5x_checkpoint(step_dir / "checkpoint")
  # A file not named 'checkpoint' is not a checkpoint.
  (tmp_path / "weights.msgpack").write_bytes(b"")
  assert not convert_t5x.is_t5x_checkpoint(tmp_path / "weights.msgpack")
  # Orbax folders are recognised by their metadata files.
  for marker in ("_METADATA", "manifest.ocdbt"):
    orbax = tmp_path / ("orbax" + marker)
    orbax.mkdir()
    (orbax / marker).write_bytes(b"")
    assert convert_t5x.find_checkpoint(orbax) == str(orbax)


def test_to_t5x_arrays_names_shapes_and_layout():
  params = _params(4)
  out = convert_t5x.to_t5x_arrays(params, CFG)
  expected = {"token_embedder/embedding": (50, 24), "encoder/relpos_bias/rel_embedding": (4, 8),
              "encoder/encoder_norm/scale": (24,)}
  for i in range(2):
    p = f"encoder/layers_{i}/"
    expected.update({p + "pre_attention_layer_norm/scale": (24,),
                     p + "attention/query/kernel": (24, 32), p + "attention/key/kernel": (24, 32),
                     p + "attention/value/kernel": (24, 32), p + "attention/out/kernel": (32, 24),
                     p + "pre_mlp_layer_norm/scale": (24,), p + "mlp/wi_0/kernel": (24, 40),
                     p + "mlp/wi_1/kernel": (24, 40), p + "mlp/wo/kernel": (40, 24)})
  assert {k: v.shape for k, v in out.items()} == expected
  assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in out.values())
  lay = params["layers"]
  # T5X kernels are [in, out] with heads flattened: query[d, h * K + k] == q[layer][d, h, k].
  assert out["encoder/layers_1/attention/key/kernel"][9, 3 * 8 + 6] == lay["k"][1, 9, 3, 6]
  assert out["encoder/layers_0/attention/out/kernel"][1 * 8 + 2, 20] == lay["o"][0, 1, 2, 20]
  np.testing.assert_array_equal(out["encoder/relpos_bias/rel_embedding"], params["rel_bias"].T)
  np.testing.assert_array_equal(out["encoder/layers_1/mlp/wi_0/kernel"], lay["wi_0"][1])
  np.testing.assert_array_equal(out["encoder/layers_0/pre_attention_layer_norm/scale"],
                                lay["attn_norm"]["scale"][0])


def test_to_t5x_arrays_round_trips_through_convert():
  params = _params(5)
  back = flatten(convert_t5x.convert(convert_t5x.to_t5x_arrays(params, CFG), CFG))
  for name, value in flatten(params).items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


# ----------------------------------------------------------------------------- encoder


def test_params_fingerprint():
  a, b = _params(6), _params(6)
  fp = params_fingerprint(a)
  assert re.fullmatch(r"[0-9a-f]{64}", fp)
  assert params_fingerprint(b) == fp  # equal values in different arrays
  assert params_fingerprint(dict(reversed(list(a.items())))) == fp  # key order does not matter
  assert params_fingerprint(jax.tree.map(jnp.asarray, a)) == fp  # jax arrays hash like numpy
  b["layers"]["wo"][1, 3, 2] += 1.0
  assert params_fingerprint(b) != fp
  c = _params(6)
  c["rel_bias"] = c["rel_bias"].astype(np.float64)  # same values, other dtype
  assert params_fingerprint(c) != fp
  d = _params(6)
  d["final_norm"] = {"scale2": d["final_norm"]["scale"]}  # same values, other name
  assert params_fingerprint(d) != fp
  # Exactly: sha256 of "name:shape:dtype:" + the raw bytes.
  x = np.array([1.0, 2.0], np.float32)
  want = hashlib.sha256(b"a/b:(2,):float32:" + x.tobytes()).hexdigest()
  assert params_fingerprint({"a": {"b": x}}) == want
  s = np.float32(2.0)                                  # a 0-d array keeps its shape ()
  assert params_fingerprint({"s": s}) == hashlib.sha256(b"s:():float32:" + s.tobytes()).hexdigest()
  # Every value counts, also in arrays past the size a strided sample would have skipped into.
  big = np.zeros((3, 70000), np.float32)
  fp_big = params_fingerprint({"w": big})
  big[2, 69999] = 1e-7
  assert params_fingerprint({"w": big}) != fp_big
  assert params_fingerprint({"w": big[:, ::2]}) == hashlib.sha256(
      b"w:(3, 35000):float32:" + np.ascontiguousarray(big[:, ::2]).tobytes()).hexdigest()


class _StubVocab:
  """What TextEncoder's constructor reads of a Tokenizer (encode_ids does not tokenize)."""
  vocab_size = 10
  max_length = 6
  fingerprint = "stub"
  source = "<stub>"


def test_encode_ids_matches_apply_and_zeroes_padding():
  params = _params(7)
  enc = TextEncoder(CFG, params, _StubVocab(), batch_size=3)
  assert enc.batch_size == 8  # rounded up to the 8 batch-parallel devices
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 50, size=(11, 6)).astype(np.int32)  # two batches, the second partial
  lengths = np.array([6, 1, 3, 5, 2, 6, 4, 1, 6, 2, 3])
  mask = np.arange(6)[None] < lengths[:, None]
  out = enc.encode_ids(ids, mask)
  assert out.shape == (11, 6, 24) and out.dtype == np.float32
  assert np.all(out[~mask] == 0.0)
  assert np.all(np.abs(out[mask]).sum(-1) > 0)
  ref = np.asarray(jax.jit(apply_fn(CFG))(params, jnp.asarray(ids), jnp.asarray(mask)))
  np.testing.assert_allclose(out[mask], ref[mask], atol=1e-4, rtol=1e-4)  # sharded vs not
  assert enc.encode_ids(np.zeros((0, 6), np.int32), np.zeros((0, 6), bool)).shape == (0, 6, 24)
  with pytest.raises(ValueError, match=r"^encode_ids: ids must be in \[0, 50\), got \[0, 50\]\.$"):
    enc.encode_ids(np.array([[0, 50]]), np.ones((1, 2), bool))
  with pytest.raises(ValueError, match=r"got \[-1, 3\]"):
    enc.encode_ids(np.array([[-1, 3]]), np.ones((1, 2), bool))
  with pytest.raises(ValueError, match=re.escape(
      "encode_ids: ids (2, 3) and mask (2, 4) must both be [B, L].")):
    enc.encode_ids(np.zeros((2, 3)), np.ones((2, 4), bool))
  with pytest.raises(ValueError, match=re.escape("ids (6,) and mask (6,)")):
    enc.encode_ids(np.zeros(6), np.ones(6, bool))


# ----------------------------------------------------------------------------- model


def _bias_model(num_buckets, max_distance):
  cfg = T5EncoderConfig(name="bias", vocab_size=8, d_model=8, num_heads=2, head_dim=4, d_ff=8,
                        num_layers=1, num_buckets=num_buckets, max_distance=max_distance)
  with nnx.use_eager_sharding(False):
    model = T5Encoder(cfg, rngs=nnx.Rngs(0))
  # table[bucket, head] = 100 * bucket + head: every bias entry says which bucket it came from.
  table = 100.0 * np.arange(num_buckets)[:, None] + np.arange(2)[None, :]
  model.rel_bias[...] = jnp.asarray(table, jnp.float32)
  return model


def test_position_bias_t5_default_buckets():
  model = _bias_model(32, 128)
  bias = np.asarray(model.position_bias(40))
  assert bias.shape == (2, 40, 40) and bias.dtype == np.float32

  def bucket(q, k):  # bias[h, query, key]; relative position = key - query
    assert bias[1, q, k] - bias[0, q, k] == 1.0  # head axis first
    return int(bias[0, q, k]) // 100

  # Bidirectional, 16 buckets per direction, exact below 8, then
  # 8 + floor(log(n / 8) / log(128 / 8) * 8) (keys after the query offset by 16).
  assert bucket(0, 0) == 0 and bucket(5, 5) == 0
  assert bucket(1, 0) == 1          # key one before the query: -1
  assert bucket(0, 1) == 17         # key one after: 16 + 1
  assert bucket(0, 7) == 23 and bucket(7, 0) == 7
  assert bucket(0, 8) == 24 and bucket(8, 0) == 8         # log(1) = 0
  assert bucket(20, 0) == 10        # log(2.5)/log(16)*8 = 2.64 -> 8 + 2
  assert bucket(0, 20) == 26
  assert bucket(39, 0) == 12        # log(4.875)/log(16)*8 = 4.57 -> 8 + 4
  assert bucket(0, 39) == 28
  for n in (8, 11, 12, 16, 23, 32, 39):  # the formula itself, for both directions
    want = 8 + math.floor(math.log(n / 8) / math.log(16) * 8)
    assert bucket(n, 0) == want and bucket(0, n) == 16 + want, n
  # Depends only on key - query.
  assert bias[0, 3, 10] == bias[0, 13, 20] == bias[0, 0, 7]
  np.testing.assert_array_equal(np.asarray(model.position_bias(1)),
                                [[[0.0]], [[1.0]]])


def test_position_bias_uses_the_configured_buckets_and_max_distance():
  # 8 buckets (4 per direction, exact below 2), max distance 20:
  # n >= 2 -> min(2 + floor(log(n / 2) / log(10) * 2), 3).
  bias = np.asarray(_bias_model(8, 20).position_bias(30))
  assert bias.shape == (2, 30, 30)
  b = lambda q, k: int(bias[0, q, k]) // 100  # noqa: E731
  assert (b(0, 0), b(1, 0), b(0, 1)) == (0, 1, 5)
  assert (b(2, 0), b(6, 0), b(7, 0), b(29, 0)) == (2, 2, 3, 3)  # log(3.5)/log(10)*2 = 1.09 at 7
  assert (b(0, 2), b(0, 6), b(0, 7), b(0, 29)) == (6, 6, 7, 7)
  # Every bucket is reached except 4 ("after the query at distance 0" cannot happen), as in T5.
  assert set(np.unique(bias[0] // 100).astype(int).tolist()) == {0, 1, 2, 3, 5, 6, 7}
