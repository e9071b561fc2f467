"""T5 encoder model: relative position buckets, presets (XL by eval_shape), bf16, logical axes."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax.sharding import PartitionSpec as P

from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.parallel.sharding import state_shardings
from vp_jax.text import config as text_config
from vp_jax.text.config import PRESETS, T5EncoderConfig, get_config
from vp_jax.text.model import (T5Encoder, apply_fn, init_params, init_stddevs,
                                relative_position_bucket)

TINY = T5EncoderConfig(name="tiny", vocab_size=64, d_model=32, num_heads=4, head_dim=8, d_ff=48,
                       num_layers=2)


def _direct_bucket(rp: int, num_buckets: int, max_distance: int, bidirectional: bool) -> int:
  """The bucket definition written out per position, in float64 (independent of the array code)."""
  half = num_buckets // 2 if bidirectional else num_buckets
  offset = half if (bidirectional and rp > 0) else 0
  n = abs(rp) if bidirectional else max(-rp, 0)
  max_exact = half // 2
  if n < max_exact:
    return offset + n
  log_bucket = math.floor(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (half - max_exact) + 1e-9)
  return offset + min(max_exact + log_bucket, half - 1)


@pytest.mark.parametrize("num_buckets,max_distance,bidirectional",
                         [(32, 128, True), (32, 128, False), (64, 256, True), (8, 20, True)])
def test_relative_position_bucket_matches_direct_computation(num_buckets, max_distance,
                                                             bidirectional):
  rp = np.arange(-300, 301)
  ours = relative_position_bucket(rp, bidirectional=bidirectional, num_buckets=num_buckets,
                                  max_distance=max_distance)
  direct = [_direct_bucket(int(r), num_buckets, max_distance, bidirectional) for r in rp]
  np.testing.assert_array_equal(ours, direct)
  assert ours.min() >= 0 and ours.max() == num_buckets - 1


def test_relative_position_bucket_t5_default_table():
  # T5 defaults (32 buckets, bidirectional, max distance 128), worked out by hand: keys before the
  # query (negative) use buckets 0..15, keys after it 16..31; exact up to distance 7, then
  # logarithmic: 8-11 -> 8, 12-15 -> 9, 16-22 -> 10, 23-31 -> 11, 32-45 -> 12, 46-63 -> 13,
  # 64-90 -> 14, >= 91 -> 15.
  table = {0: 0, -1: 1, -7: 7, -8: 8, -11: 8, -12: 9, -16: 10, -22: 10, -23: 11, -32: 12, -45: 12,
           -46: 13, -64: 14, -90: 14, -91: 15, -128: 15, -1000: 15, 1: 17, 7: 23, 8: 24, 63: 29,
           64: 30, 91: 31, 5000: 31}
  rp = np.array(list(table))
  np.testing.assert_array_equal(relative_position_bucket(rp), list(table.values()))


def test_relative_position_bucket_matches_hf_transformers():
  torch = pytest.importorskip("torch")
  t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
  rp = np.arange(-200, 201)
  for bidirectional in (True, False):
    hf = t5.T5Attention._relative_position_bucket(torch.tensor(rp), bidirectional=bidirectional)
    np.testing.assert_array_equal(relative_position_bucket(rp, bidirectional=bidirectional),
                                  hf.numpy())


def test_presets_match_public_t5_v1_1_sizes_and_xl_by_eval_shape():
  xl = get_config("t5-v1_1-xl")
  assert (xl.d_model, xl.num_heads, xl.head_dim, xl.d_ff, xl.num_layers, xl.vocab_size) == (
      2048, 32, 64, 5120, 24, 32128)
  assert set(PRESETS) >= {"t5-v1_1-small", "t5-v1_1-base", "t5-v1_1-large", "t5-v1_1-xl"}
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: T5Encoder(xl, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(params))
  assert shapes["layers"]["q"] == (24, 2048, 32, 64)
  assert shapes["layers"]["wi_0"] == (24, 2048, 5120)
  assert shapes["token_embed"] == (32128, 2048)
  count = sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(
      x, tuple)))
  assert count == xl.num_params()
  assert 1.22e9 < count < 1.23e9  # the T5-XL encoder (~1.2B; the full XL with decoder is ~3B)
  # Its parameters shard under the default rules on an fsdp x tensor mesh of the 8 devices.
  mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
  shardings = state_shardings(params, DEFAULT_RULES, mesh)
  assert shardings["layers"]["q"].spec == P(None, "fsdp", "tensor", None)
  assert shardings["layers"]["wo"].spec == P(None, "tensor", "fsdp")
  assert shardings["rel_bias"].spec == P(None, "tensor")
  per_device = sum(
      int(np.prod(sh.shard_shape(s))) * 4 for s, sh in zip(
          jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)),
          jax.tree.leaves(shardings)))
  assert per_device < 0.2 * count * 4  # ~1/8 of the 4.9 GB of float32 weights per device
  # The forward pass of XL at the paper's 64 tokens, abstractly.
  out = jax.eval_shape(lambda m, ids: m(ids), abstract, jax.ShapeDtypeStruct((2, 64), jnp.int32))
  assert out.shape == (2, 64, 2048) and out.dtype == jnp.float32
  assert get_config("t5-v1_1-small").num_params() == 32128 * 512 + 8 * (
      4 * 512 * 384 + 3 * 512 * 1024 + 2 * 512) + 32 * 6 + 512


def test_every_parameter_has_logical_axes_known_to_the_rules():
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: T5Encoder(TINY, rngs=nnx.Rngs(0)))
  known = {name for name, _ in DEFAULT_RULES}
  leaves = jax.tree_util.tree_leaves_with_path(
      nnx.state(abstract, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert len(leaves) == 12
  for path, var in leaves:
    axes = var.get_metadata().get("out_sharding")
    assert axes is not None and len(axes) == len(var.shape), path
    assert {a for a in axes if a is not None} <= known, (path, axes)
  layers = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))["layers"]
  assert layers["q"].shape[0] == TINY.num_layers  # stacked (scanned) layer axis


def test_init_params_follow_t5_scales():
  cfg = dataclasses.replace(TINY, d_model=64, d_ff=256, vocab_size=512)
  params = init_params(cfg, seed=1)
  std = init_stddevs(cfg)
  assert std["layers/q"] == pytest.approx(std["layers/k"] / math.sqrt(cfg.head_dim))
  np.testing.assert_allclose(params["layers"]["wo"].std(), std["layers/wo"], rtol=0.05)
  np.testing.assert_allclose(params["layers"]["q"].std(), std["layers/q"], rtol=0.05)
  np.testing.assert_allclose(params["token_embed"].std(), 1.0, rtol=0.05)
  assert np.all(params["final_norm"]["scale"] == 1.0)
  again = init_params(cfg, seed=1)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))


def _forward(cfg, params, ids, mask):
  out = jax.jit(apply_fn(cfg))(params, jnp.asarray(ids), jnp.asarray(mask))
  return np.asarray(out.astype(jnp.float32))


def test_padding_does_not_change_real_positions_and_bf16_is_close():
  params = init_params(TINY, seed=0)
  rng = np.random.default_rng(0)
  ids = rng.integers(2, TINY.vocab_size, size=(2, 12)).astype(np.int32)
  mask = np.ones_like(ids, bool)
  mask[1, 7:] = False
  # Row 2 = row 1 with a padded token's id changed: nothing changes at its real positions.
  ids = np.concatenate([ids, ids[1:]])
  ids[2, 9] = 5
  mask = np.concatenate([mask, mask[1:]])
  out = _forward(TINY, params, ids, mask)
  np.testing.assert_allclose(out[2, :7], out[1, :7], atol=1e-6)
  # The second row's 7 real tokens alone (no padding at all) give the same hidden states.
  alone = _forward(TINY, params, ids[1:2, :7], mask[1:2, :7])
  np.testing.assert_allclose(out[1, :7], alone[0], atol=2e-5, rtol=1e-5)
  # bf16 compute and storage: same function, bf16 accuracy (relative error of a few 1e-2).
  bf16 = dataclasses.replace(TINY, dtype="bfloat16", param_dtype="bfloat16")
  bparams = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  out16 = _forward(bf16, bparams, ids, mask)
  rel = np.linalg.norm(out16 - out) / np.linalg.norm(out)
  assert 1e-4 < rel < 3e-2, rel


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="num_buckets"):
    T5EncoderConfig(num_buckets=31)
  with pytest.raises(ValueError, match="dtype"):
    T5EncoderConfig(dtype="float16")
  with pytest.raises(ValueError, match="d_model"):
    T5EncoderConfig(d_model=0)
  with pytest.raises(ValueError, match="Unknown T5 encoder preset"):
    get_config("t5-xl")
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5EncoderConfig.from_hf_config({"vocab_size": 10, "d_model": 8, "num_heads": 2, "d_kv": 4,
                                    "d_ff": 8, "num_layers": 1, "feed_forward_proj": "relu"})
  hf = get_config("t5-v1_1-base").to_hf_config()
  assert T5EncoderConfig.from_hf_config(hf) == get_config("t5-v1_1-base")
  assert text_config.MAX_TEXT_TOKENS == 64
