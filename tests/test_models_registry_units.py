"""Model registry: `register` maps a config type to a module class, `build_model` dispatches on the
exact config type (not subclasses), passes the config and rngs through, and names the known types
when a config type is unknown."""
import dataclasses

import jax
import pytest
from flax import nnx

from vp_jax.models import registry, toy_lm


@pytest.fixture(autouse=True)
def _private_registry(monkeypatch):
  """Each test registers into a copy, so the real registrations are left as they were."""
  monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))


@dataclasses.dataclass(frozen=True)
class AlphaConfig:
  width: int = 3


@dataclasses.dataclass(frozen=True)
class BetaConfig:
  depth: int = 2


@dataclasses.dataclass(frozen=True)
class AlphaChildConfig(AlphaConfig):
  pass


class Recorder:
  """Stands in for a module class: keeps what `build_model` passed."""

  def __init__(self, config, *, rngs):
    self.config, self.rngs = config, rngs


class OtherRecorder(Recorder):
  pass


def test_build_model_calls_the_registered_class_with_config_and_rngs():
  registry.register(AlphaConfig, Recorder)
  cfg, rngs = AlphaConfig(width=7), nnx.Rngs(0)
  model = registry.build_model(cfg, rngs)
  assert type(model) is Recorder
  assert model.config is cfg and model.config.width == 7
  assert model.rngs is rngs


def test_dispatch_is_per_exact_type_and_register_replaces():
  registry.register(AlphaConfig, Recorder)
  registry.register(BetaConfig, OtherRecorder)
  assert type(registry.build_model(AlphaConfig(), None)) is Recorder
  assert type(registry.build_model(BetaConfig(), None)) is OtherRecorder
  # A subclass of a registered config type is not that type.
  with pytest.raises(ValueError, match="No model registered for config type AlphaChildConfig"):
    registry.build_model(AlphaChildConfig(), None)
  # Registering the same type again replaces the builder.
  registry.register(AlphaConfig, OtherRecorder)
  assert type(registry.build_model(AlphaConfig(width=1), None)) is OtherRecorder


def test_unknown_config_names_the_sorted_known_types(monkeypatch):
  monkeypatch.setattr(registry, "_BUILDERS", {})
  registry.register(BetaConfig, Recorder)
  registry.register(AlphaConfig, Recorder)
  with pytest.raises(ValueError) as e:
    registry.build_model(3.5, None)
  assert str(e.value) == ("No model registered for config type float; known: "
                          "['AlphaConfig', 'BetaConfig'].")


def test_the_toy_lm_registration_builds_a_toy_lm_of_the_configs_shapes():
  cfg = toy_lm.ToyLMConfig(vocab_size=24, max_len=10, num_layers=3, embed_dim=8, num_heads=2,
                           mlp_dim=12)
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: registry.build_model(cfg, nnx.Rngs(0)))
  assert type(model) is toy_lm.ToyLM and model.cfg is cfg
  shapes = {"/".join(str(k.key) for k in path): x.shape for path, x in
            jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}
  assert shapes["embed/embedding"] == (24, 8)
  assert shapes["pos_embed"] == (10, 8)
  assert shapes["layers/qkv"] == (3, 8, 3, 2, 4)     # [layers, d, q/k/v, heads, head_dim]
  assert shapes["layers/out"] == (3, 2, 4, 8)
