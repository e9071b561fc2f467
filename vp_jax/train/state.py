"""The train state as one pytree, and its creation directly in sharded form.

Parameters, the model's other variables (EMA buffers, codebook statistics, ...), the optimizer
state and the weight averages of `TrainerConfig.ema_decay` are plain nested dicts of arrays, so
Orbax saves them and optax updates them without NNX in the way. `ModelSpec` holds what turns them
back into an NNX module. Creation follows big_vision: evaluate the init abstractly, derive every
leaf's sharding from the logical axis names, then run the init under jit with those out_shardings,
so no full copy of the state ever exists on one device.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vp_jax.parallel.rules import LogicalRules
from vp_jax.parallel.sharding import state_shardings

ModelFactory = Callable[[nnx.Rngs], nnx.Module]


@flax.struct.dataclass
class TrainState:
  step: jax.Array                 # int32 [], number of steps taken (skipped ones included)
  params: dict                    # nnx.Param values, pure nested dict
  rest: dict                      # the model's other variables, pure nested dict
  opt_state: dict                 # group name -> optax state over that group's params
  rng: jax.Array                  # uint32 [2], base key; step keys are fold_in(rng, step)
  nonfinite_streak: jax.Array     # int32 [], consecutive skipped (non-finite) steps
  nonfinite_total: jax.Array      # int32 [], all skipped steps
  # Exponential moving averages of the params of the groups in `TrainerConfig.ema_decay`: top-level
  # param key -> pure dict shaped (and sharded) like `params[key]`; {} when no group keeps one.
  ema: dict


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to rebuild the NNX module from pure dicts, and which top-level params each group owns."""

  graphdef: Any
  params_template: nnx.State
  rest_template: nnx.State
  groups: Mapping[str, tuple[str, ...]]

  def merge(self, params: dict, rest: dict) -> nnx.Module:
    p = jax.tree.map(lambda x: x, self.params_template)
    r = jax.tree.map(lambda x: x, self.rest_template)
    nnx.replace_by_pure_dict(p, params)
    nnx.replace_by_pure_dict(r, rest)
    return nnx.merge(self.graphdef, p, r)


def split_groups(params: dict, groups: Mapping[str, tuple[str, ...]]) -> dict[str, dict]:
  return {g: {k: params[k] for k in keys} for g, keys in groups.items()}


def join_groups(parts: Mapping[str, dict]) -> dict:
  out = {}
  for part in parts.values():
    out.update(part)
  return out


def model_spec(factory: ModelFactory) -> ModelSpec:
  """Abstractly builds the model and reads its structure and optimizer groups.

  A model may define `optimizer_groups() -> {group: (top-level attribute names)}` (e.g. a GAN's
  generator and discriminator); otherwise all parameters form the group "model".
  """
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  top = tuple(nnx.to_pure_dict(params).keys())
  groups = dict(model.optimizer_groups()) if hasattr(model, "optimizer_groups") else {"model": top}
  owned = [k for keys in groups.values() for k in keys]
  if sorted(owned) != sorted(top):
    raise ValueError(f"optimizer_groups() must partition the top-level parameters {sorted(top)}; "
                     f"got {groups}.")
  return ModelSpec(graphdef, params, rest, {g: tuple(v) for g, v in groups.items()})


def ema_keys(spec: ModelSpec, ema_groups) -> tuple[str, ...]:
  """The top-level param keys whose moving average the train state keeps: those of `ema_groups`
  (group names: a tuple, or the dict `TrainerConfig.ema_decay`), in the model's group order."""
  if isinstance(ema_groups, str):   # "generator" would match groups by substring
    raise TypeError(f"ema_groups={ema_groups!r}: pass a tuple of group names, e.g. "
                    f"({ema_groups!r},).")
  return tuple(k for g in spec.groups if g in ema_groups for k in spec.groups[g])


def _init_fn(factory, spec: ModelSpec, txs: Mapping[str, optax.GradientTransformation],
             ema_groups=()):
  def init(rng):
    with nnx.use_eager_sharding(False):
      model = factory(nnx.Rngs(params=jax.random.fold_in(rng, 0)))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    parts = split_groups(params, spec.groups)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, rest=nnx.to_pure_dict(rest),
        opt_state={g: txs[g].init(parts[g]) for g in spec.groups},
        rng=rng, nonfinite_streak=jnp.zeros((), jnp.int32),
        nonfinite_total=jnp.zeros((), jnp.int32),
        ema={k: jax.tree.map(jnp.copy, params[k]) for k in ema_keys(spec, ema_groups)})
  return init


def train_state_shardings(factory: ModelFactory, spec: ModelSpec,
                          txs: Mapping[str, optax.GradientTransformation],
                          mesh: jax.sharding.Mesh, rules: LogicalRules,
                          ema_groups=()) -> TrainState:
  """A TrainState-shaped tree of NamedShardings: params by their logical axes, optimizer moments
  and weight averages like the params they track, everything else replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  params_sh = state_shardings(spec.params_template, rules, mesh)
  rest_sh = state_shardings(spec.rest_template, rules, mesh)
  abstract = jax.eval_shape(_init_fn(factory, spec, txs, ema_groups), jax.random.PRNGKey(0))
  parts_sh = split_groups(params_sh, spec.groups)
  opt_sh = {
      g: optax.tree_map_params(txs[g], lambda _, s: s, abstract.opt_state[g], parts_sh[g],
                               transform_non_params=lambda _: replicated)
      for g in spec.groups}
  return TrainState(step=replicated, params=params_sh, rest=rest_sh, opt_state=opt_sh,
                    rng=replicated, nonfinite_streak=replicated, nonfinite_total=replicated,
                    ema={k: params_sh[k] for k in ema_keys(spec, ema_groups)})


def abstract_train_state(factory, spec, txs, shardings: TrainState, ema_groups=()) -> TrainState:
  """ShapeDtypeStructs with shardings: the target for a sharded Orbax restore."""
  abstract = jax.eval_shape(_init_fn(factory, spec, txs, ema_groups), jax.random.PRNGKey(0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def create_train_state(factory: ModelFactory, spec: ModelSpec,
                       txs: Mapping[str, optax.GradientTransformation], seed: int,
                       shardings: TrainState, ema_groups=()) -> TrainState:
  """Initializes parameters, optimizer state and weight averages (= the initial params) directly
  into their shardings."""
  init = jax.jit(_init_fn(factory, spec, txs, ema_groups), out_shardings=shardings)
  return init(jax.random.PRNGKey(seed))
