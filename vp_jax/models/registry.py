"""Which module class a model config builds: `build_model(config, rngs)`.

Entry points receive a frozen config dataclass (from gin) and need a model factory; each model kind
registers its config type here once, next to its definition.
"""
from __future__ import annotations

from typing import Any, Callable

from flax import nnx

_BUILDERS: dict[type, Callable[..., nnx.Module]] = {}


def register(config_type: type, module_cls: Callable[..., nnx.Module]) -> None:
  """Makes `build_model(config)` build `module_cls(config, rngs=...)` for configs of this type."""
  _BUILDERS[config_type] = module_cls


def build_model(config: Any, rngs: nnx.Rngs) -> nnx.Module:
  """The registered model for `type(config)`; a ValueError naming the known types otherwise."""
  if type(config) not in _BUILDERS:
    raise ValueError(f"No model registered for config type {type(config).__name__}; known: "
                     f"{sorted(t.__name__ for t in _BUILDERS)}.")
  return _BUILDERS[type(config)](config, rngs=rngs)


def factory(config: Any) -> Callable[[nnx.Rngs], nnx.Module]:
  """A `factory(rngs) -> module` for the trainer; fails now if the config type is unknown."""
  if type(config) not in _BUILDERS:
    build_model(config, None)
  return lambda rngs: build_model(config, rngs)
