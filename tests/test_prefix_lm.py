"""The prefix LM: parameter counts (eval_shape for the big presets), the prefix/causal attention
pattern, text conditioning, KV-cache parity, the chunked loss, and the sharded 8B train step."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.prefix_lm.config import PRESETS, PrefixLMConfig, preset
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.nn.cross_entropy import cross_entropy_sums
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.sequence.vocab import Special
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

TINY = preset("tiny")


@nnx.jit
def _logits(model, tokens, prefix_length, text, text_mask):
  return model.logits(tokens, prefix_length=prefix_length, text=text, text_mask=text_mask)


@functools.partial(nnx.jit, static_argnames="cache_length")
def _prefill(model, tokens, text, text_mask, cache_length):
  return model.prefill(tokens, cache_length=cache_length, text=text, text_mask=text_mask)


@nnx.jit
def _decode(model, token, cache):
  return model.decode_step(token, cache, model.decode_layers())


@functools.partial(nnx.jit, static_argnames="train")
def _loss(model, batch, key, train):
  return model.loss(batch, key=key, train=train)[0]


def _model(cfg=TINY, seed=0):
  with nnx.use_eager_sharding(False):
    return nnx.jit(lambda: PrefixLM(cfg, rngs=nnx.Rngs(seed)))()


def _inputs(cfg=TINY, b=2, length=24, prefix=10, text_len=3, seed=1):
  rng = np.random.default_rng(seed)
  lo, hi = cfg.vocab.visual_range()
  tokens = rng.integers(lo, hi, (b, length)).astype(np.int32)
  tokens[:, 0] = Special.BOS
  tokens[:, 2:2 + text_len] = Special.TEXT_SLOT
  text = rng.normal(size=(b, text_len, cfg.text_dim)).astype(np.float32)
  return (jnp.asarray(tokens), jnp.full((b,), prefix, jnp.int32), jnp.asarray(text),
          jnp.ones((b, text_len), bool))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_tiny_parameter_count_matches_the_formula():
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: PrefixLM(TINY, rngs=nnx.Rngs(0)))
  assert _count(nnx.state(abstract, nnx.Param)) == TINY.num_params() == 272_704


@pytest.mark.parametrize("name,target", [("300m", 300e6), ("1b", 1e9), ("8b", 8e9)])
def test_preset_sizes_with_eval_shape(name, target):
  cfg = PRESETS[name]
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: PrefixLM(cfg, rngs=nnx.Rngs(0)))
  count = _count(nnx.state(abstract, nnx.Param))
  assert count == cfg.num_params()
  assert abs(count - target) / target < 0.10, f"{name}: {count / 1e6:.1f}M"
  assert cfg.vocab_size == 266_496


def test_output_changes_never_reach_earlier_positions():
  model = _model()
  tokens, prefix, text, mask = _inputs()
  base = _logits(model, tokens, prefix, text, mask)
  for pos in (10, 15, 23):                      # output positions (>= prefix 10)
    changed = tokens.at[:, pos].set(TINY.vocab.visual_range()[0] + 5)
    out = _logits(model, changed, prefix, text, mask)
    np.testing.assert_allclose(out[:, :pos], base[:, :pos], atol=1e-5)
    assert np.abs(out[:, pos:] - base[:, pos:]).max() > 1e-3


def test_prefix_is_bidirectional():
  model = _model()
  tokens, prefix, text, mask = _inputs()
  base = _logits(model, tokens, prefix, text, mask)
  changed = tokens.at[:, 8].set(TINY.vocab.visual_range()[0] + 7)     # last-but-one prefix token
  out = _logits(model, changed, prefix, text, mask)
  diff = np.abs(np.asarray(out - base)).max(axis=(0, 2))
  assert np.all(diff[:8] > 1e-4), diff                # earlier prefix positions see it
  assert np.all(diff[10:] > 1e-4)                     # and so do all outputs
  # With prefix_length 0 the same model is a plain causal LM: no earlier position sees it.
  zero = jnp.zeros_like(prefix)
  causal = np.abs(np.asarray(_logits(model, changed, zero, text, mask)
                             - _logits(model, tokens, zero, text, mask))).max(axis=(0, 2))
  assert np.all(causal[:8] < 1e-5)


def test_text_slots_take_the_projected_embeddings_and_masked_ones_are_ignored():
  model = _model()
  tokens, prefix, text, mask = _inputs()
  base = _logits(model, tokens, prefix, text, mask)
  other = text.at[:, 1].add(1.0)
  assert np.abs(np.asarray(_logits(model, tokens, prefix, other, mask) - base))[:, 10:].max() > 1e-3
  # Slot 1 masked: its embedding no longer matters anywhere but at its own position.
  masked = mask.at[:, 1].set(False)
  a = _logits(model, tokens, prefix, text, masked)
  b = _logits(model, tokens, prefix, other, masked)
  keep = np.ones(24, bool)
  keep[3] = False                                      # slot 1 is position 3
  np.testing.assert_allclose(np.asarray(a)[:, keep], np.asarray(b)[:, keep], atol=1e-5)


def test_condition_dropout_one_makes_the_loss_independent_of_text():
  model = _model(dataclasses.replace(TINY, cond_dropout=1.0))
  tokens, prefix, text, mask = _inputs()
  batch = {"tokens": tokens, "prefix_length": prefix, "text_mask": mask,
           "loss_mask": jnp.arange(24)[None] >= prefix[:, None]}
  key = jax.random.key(0)
  a = _loss(model, {**batch, "text_embeddings": text}, key, True)
  b = _loss(model, {**batch, "text_embeddings": text * 3.0}, key, True)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # In eval there is no dropout: text matters.
  c = _loss(model, {**batch, "text_embeddings": text}, key, False)
  d = _loss(model, {**batch, "text_embeddings": text * 3.0}, key, False)
  assert abs(float(c - d)) > 1e-4


def test_kv_cache_decoding_matches_the_full_forward_pass():
  """Tolerance: 1e-4 absolute on float32 logits (the same math in another order)."""
  model = _model()
  tokens, prefix, text, mask = _inputs(b=3, length=30, prefix=12)
  full = _logits(model, tokens, prefix, text, mask)
  logits, cache = _prefill(model, tokens[:, :12], text, mask, 30)
  steps = [logits]
  for i in range(12, 29):
    logits, cache = _decode(model, tokens[:, i], cache)
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, 1), np.asarray(full)[:, 11:29], atol=1e-4)
  assert int(cache["index"]) == 29


def test_gqa_and_untied_variants_decode_consistently():
  cfg = dataclasses.replace(TINY, num_kv_heads=1, tie_embeddings=False, head_dim=8)
  model = _model(cfg)
  assert _count(nnx.state(model, nnx.Param)) == cfg.num_params()
  tokens, prefix, text, mask = _inputs(cfg)
  full = _logits(model, tokens, prefix, text, mask)
  logits, cache = _prefill(model, tokens[:, :10], text, mask, 24)
  np.testing.assert_allclose(logits, full[:, 9], atol=1e-4)
  logits, _ = _decode(model, tokens[:, 10], cache)
  np.testing.assert_allclose(logits, full[:, 10], atol=1e-4)


def test_chunked_loss_equals_the_naive_loss_and_gradient():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 37, 16)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(50, 16)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 37)))
  weights = jnp.asarray(rng.random((2, 37)) > 0.3, jnp.float32)

  def loss(table, chunk):
    s = cross_entropy_sums(hidden, targets, weights, lambda h: h @ table.T, chunk)
    return (s["nll"] + 1e-2 * s["z"]) / s["weight"]

  logits = np.asarray(hidden @ table.T, np.float64)
  lse = np.log(np.exp(logits).sum(-1))
  nll = lse - np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
  expected = ((nll + 1e-2 * lse ** 2) * np.asarray(weights)).sum() / np.asarray(weights).sum()
  for chunk in (0, 5, 16, 64):
    np.testing.assert_allclose(loss(table, chunk), expected, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(loss)(table, 5), jax.grad(loss)(table, 0), rtol=1e-4,
                             atol=1e-6)


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="num_kv_heads"):
    PrefixLMConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="dtype"):
    PrefixLMConfig(dtype="float16")
  with pytest.raises(ValueError, match="Unknown PrefixLM preset"):
    preset("3b")


def test_8b_sharded_train_step_lowers_on_8_devices_with_fsdp():
  cfg = PRESETS["8b"]
  mesh = make_mesh(MeshConfig(data=1, fsdp=-1))
  trainer = Trainer(lambda rngs: PrefixLM(cfg, rngs=rngs),
                    TrainerConfig(train_steps=10, compute_dtype="bfloat16", progress=False,
                                  optimizers={"model": OptimizerConfig()}),
                    mesh, DEFAULT_RULES)
  state = trainer.abstract_state()
  assert _count(state.params) == cfg.num_params()
  # Every big parameter is split 8 ways over fsdp.
  table = state.params["embed"]["embedding"]
  assert table.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert table.sharding.shard_shape(table.shape) == (266_496, 512)
  b, length = 8, 1352
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=batch_sharding)
  batch = {"tokens": sds((b, length), jnp.int32), "prefix_length": sds((b,), jnp.int32),
           "loss_mask": sds((b, length), jnp.bool_),
           "text_embeddings": sds((b, 64, cfg.text_dim), jnp.float32),
           "text_mask": sds((b, 64), jnp.bool_)}
  with jax.set_mesh(mesh), nnx.logical_axis_rules(DEFAULT_RULES):
    lowered = trainer._train_step.lower(state, batch)
  assert "mhlo.num_partitions = 8" in lowered.as_text()
  gate = state.params["layers"]["mlp_gate"]["kernel"]    # [layers, embed, mlp]
  assert gate.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert gate.sharding.shard_shape(gate.shape) == (32, 512, 14336)


def test_prefix_lm_mask_by_hand():
  from vp_jax.models.prefix_lm.attention import prefix_lm_mask
  valid = jnp.asarray([[True, True, True, True, True], [True, False, True, True, False]])
  mask = np.asarray(prefix_lm_mask(5, jnp.asarray([2, 0]), valid)).astype(int)
  # Row 0: a 2-token prefix seen by every query, causal after it.
  np.testing.assert_array_equal(mask[0], [[1, 1, 0, 0, 0],
                                          [1, 1, 0, 0, 0],
                                          [1, 1, 1, 0, 0],
                                          [1, 1, 1, 1, 0],
                                          [1, 1, 1, 1, 1]])
  # Row 1: no prefix (purely causal); invalid keys 1 and 4 are hidden from every query but
  # themselves, so an invalid query's softmax still has one key.
  np.testing.assert_array_equal(mask[1], [[1, 0, 0, 0, 0],
                                          [1, 1, 0, 0, 0],
                                          [1, 0, 1, 0, 0],
                                          [1, 0, 1, 1, 0],
                                          [1, 0, 1, 1, 1]])
