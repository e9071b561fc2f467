"""Logical axis names -> PartitionSpecs / NamedShardings, for parameters, activations and batches.

Parameters carry their logical names in the standard NNX metadata (`nnx.with_partitioning` /
`out_sharding=`); the mapping to mesh axes is the rule set in config. The resolution is stricter than
flax's own: an unknown logical name is an error (not silently passed through as a mesh axis), a mesh
axis is used at most once per array (a later dimension that maps to an already used axis stays
unsharded), and a dimension that the mesh axes do not divide is an error that names the array.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.core.spmd as flax_spmd
import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vp_jax.parallel.rules import LogicalRules

BATCH_AXES = ("batch",)


def logical_to_spec(logical_axes: Sequence[str | None], rules: LogicalRules,
                    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh,
                    shape: Sequence[int] | None = None, name: str = "array") -> PartitionSpec:
  """Maps per-dimension logical names to a PartitionSpec over `mesh` with `rules`."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for dim, logical in enumerate(logical_axes):
    if logical is None:
      spec.append(None)
      continue
    if logical not in table:
      raise ValueError(f"{name}: logical axis {logical!r} has no rule; rules cover "
                       f"{sorted(table)}.")
    target = table[logical]
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    for a in axes:
      if a not in mesh.shape:
        raise ValueError(f"{name}: rule {logical!r} -> {a!r} names no mesh axis of "
                         f"{tuple(mesh.shape)}.")
    if shape is not None and axes:
      ways = math.prod(mesh.shape[a] for a in axes)
      if shape[dim] % ways:
        raise ValueError(
            f"{name}: dimension {dim} ({logical!r}, size {shape[dim]}) is not divisible by the "
            f"{ways} devices of mesh axes {axes}; change the mesh or the logical axis rules.")
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def state_shardings(state: nnx.State, rules: LogicalRules,
                    mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """A pure-dict tree of NamedShardings for an (abstract) NNX state, from `out_sharding` metadata.

  Variables without logical names are replicated.
  """
  def one(path, var):
    shape = getattr(var, "shape", None)
    logical = var.get_metadata().get("out_sharding") if isinstance(var, nnx.Variable) else None
    if not logical:
      return NamedSharding(mesh, PartitionSpec())
    if shape is not None and len(logical) != len(shape):
      raise ValueError(f"{_path_name(path)}: {len(logical)} logical axes {logical} for a "
                       f"{len(shape)}-d value.")
    return NamedSharding(mesh, logical_to_spec(logical, rules, mesh, shape, _path_name(path)))

  shardings = jax.tree_util.tree_map_with_path(
      one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings) if isinstance(shardings, nnx.State) else shardings


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op outside a mesh context."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = flax_spmd.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  spec = logical_to_spec(logical_axes, rules, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_sharding(mesh: jax.sharding.Mesh, rules: LogicalRules, ndim: int) -> NamedSharding:
  """Leading dimension over the batch mesh axes, the rest replicated."""
  spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), rules, mesh)
  return NamedSharding(mesh, spec)


def batch_ways(mesh: jax.sharding.Mesh, rules: LogicalRules) -> int:
  """How many ways the batch dimension is split on `mesh` (a global batch must be a multiple)."""
  entry = batch_sharding(mesh, rules, 1).spec[0]
  axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
  return math.prod(mesh.shape[a] for a in axes)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                 rules: LogicalRules) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded over the batch axes.

  Each process passes the rows it loaded (global batch / process count); the leading dimension of
  the result is the global batch.
  """
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    sharding = batch_sharding(mesh, rules, value.ndim)
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    ways = math.prod(mesh.shape[a] for a in _spec_axes(sharding.spec[0]))
    if global_shape[0] % ways:
      raise ValueError(f"batch[{key!r}]: global batch {global_shape[0]} is not divisible by the "
                       f"{ways} batch-parallel devices.")
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def _spec_axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)
