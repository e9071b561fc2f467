"""Small pieces of the shared training machinery: optimizer-group split/join, the params kept as
moving averages, the per-step key, the progress line's durations."""
import re

import jax
import numpy as np
import pytest

from vp_jax.train.progress import format_duration
from vp_jax.train.state import ModelSpec, ema_keys, join_groups, split_groups
from vp_jax.train.step import step_key


def test_split_and_join_groups():
  params = {"tokenizer": {"w": 1}, "discriminator": {"w": 2}, "lpips": {"w": 3}}
  groups = {"generator": ("tokenizer", "lpips"), "discriminator": ("discriminator",)}
  parts = split_groups(params, groups)
  assert parts == {"generator": {"tokenizer": {"w": 1}, "lpips": {"w": 3}},
                   "discriminator": {"discriminator": {"w": 2}}}
  assert join_groups(parts) == params


def test_ema_keys_are_the_named_groups_keys_in_the_models_group_order():
  spec = ModelSpec(graphdef=None, params_template=None, rest_template=None,
                   groups={"generator": ("tokenizer", "lpips"), "discriminator": ("disc",),
                           "text": ("proj",)})
  assert ema_keys(spec, ("generator",)) == ("tokenizer", "lpips")
  assert ema_keys(spec, ("discriminator",)) == ("disc",)
  # The spec's group order, whatever the order of the names asked for.
  assert ema_keys(spec, ("text", "generator")) == ("tokenizer", "lpips", "proj")
  assert ema_keys(spec, ("text", "discriminator", "generator")) == ("tokenizer", "lpips", "disc",
                                                                    "proj")
  assert ema_keys(spec, {"discriminator": 0.999}) == ("disc",)   # TrainerConfig.ema_decay's keys
  assert ema_keys(spec, ()) == ()
  # Names of no group are ignored, not an error.
  assert ema_keys(spec, ("gen", "model")) == ()
  assert ema_keys(spec, ("nope", "text")) == ("proj",)
  with pytest.raises(TypeError, match=re.escape("ema_groups='generator': pass a tuple")):
    ema_keys(spec, "generator")


def test_step_key_depends_on_seed_and_step_only():
  a, b = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
  keys = [np.asarray(jax.random.key_data(step_key(a, s))) for s in range(3)]
  assert len({k.tobytes() for k in keys}) == 3
  np.testing.assert_array_equal(np.asarray(jax.random.key_data(step_key(a, 1))), keys[1])
  assert np.any(np.asarray(jax.random.key_data(step_key(b, 1))) != keys[1])
  # Not the seed's own key, nor plain fold_in(seed, step) (that stream is left for other uses).
  assert np.any(keys[0] != np.asarray(jax.random.key_data(a)))
  assert np.any(keys[1] != np.asarray(jax.random.key_data(jax.random.fold_in(a, 1))))


def test_format_duration():
  assert format_duration(0) == "00:00"
  assert format_duration(59.9) == "00:59"
  assert format_duration(61) == "01:01"
  assert format_duration(3600 + 5 * 60 + 7) == "1:05:07"
  assert format_duration(-3) == "00:00"
