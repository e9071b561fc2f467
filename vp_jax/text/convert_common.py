"""What every checkpoint converter shares: reading named arrays with checks, and the target layout.

A converter maps a public checkpoint's parameter names onto `T5Encoder`'s parameters (a pure dict:
`token_embed [V, D]`, `rel_bias [buckets, H]`, `final_norm/scale [D]`, and under `layers` the
per-layer weights stacked on a leading [num_layers] axis). A missing parameter, a shape that does
not match the config, or an encoder parameter the config has no place for is a
`CheckpointConversionError` that names the parameter and the checkpoint.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from vp_jax.text.config import DTYPES, T5EncoderConfig


class CheckpointConversionError(ValueError):
  """A checkpoint does not hold the encoder the config describes (message names the parameter)."""


# Per-layer parameters of T5Encoder.layers, in our layout (before stacking over layers).
def layer_shapes(cfg: T5EncoderConfig) -> dict[str, tuple[int, ...]]:
  d, h, k, f = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff
  return {"attn_norm/scale": (d,), "q": (d, h, k), "k": (d, h, k), "v": (d, h, k),
          "o": (h, k, d), "mlp_norm/scale": (d,), "wi_0": (d, f), "wi_1": (d, f), "wo": (f, d)}


def global_shapes(cfg: T5EncoderConfig) -> dict[str, tuple[int, ...]]:
  return {"token_embed": (cfg.vocab_size, cfg.d_model),
          "rel_bias": (cfg.num_buckets, cfg.num_heads), "final_norm/scale": (cfg.d_model,)}


class Reader:
  """Named arrays of one checkpoint (lazily loaded), handed out after their shape is checked."""

  def __init__(self, arrays: Mapping[str, object], where: str,
               load: Callable[[object], np.ndarray] = np.asarray):
    self._arrays = arrays
    self._load = load
    self.where = where
    self.used: set[str] = set()

  def has(self, key: str) -> bool:
    return key in self._arrays

  def shape(self, key: str) -> tuple[int, ...]:
    value = self._arrays[key]
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else np.shape(value)))

  def get(self, key: str, shapes: Iterable[tuple[int, ...]] | tuple[int, ...]) -> np.ndarray:
    """The array `key`, whose shape must be one of `shapes`; errors name `key` and the file."""
    # One shape (a tuple of ints; `()` is a scalar) or a list of allowed shapes.
    shapes = ([tuple(shapes)] if isinstance(shapes, tuple) and all(isinstance(d, int) for d in shapes)
              else [tuple(s) for s in shapes])
    if key not in self._arrays:
      near = sorted(k for k in self._arrays if k.split(".")[0] == key.split(".")[0]
                    or k.split("/")[0] == key.split("/")[0])[:5]
      raise CheckpointConversionError(
          f"{self.where}: missing parameter {key!r} (expected shape {_fmt(shapes)}); "
          f"the checkpoint has {len(self._arrays)} arrays, "
          f"e.g. {near or sorted(self._arrays)[:5]}.")
    got = self.shape(key)
    if got not in shapes:
      raise CheckpointConversionError(
          f"{self.where}: parameter {key!r} has shape {got}, expected {_fmt(shapes)} for the "
          f"configured encoder; the checkpoint and the config disagree.")
    self.used.add(key)
    value = np.asarray(self._load(self._arrays[key]))
    if not jnp.issubdtype(value.dtype, jnp.floating):   # jnp's: bfloat16 counts (np's does not)
      raise CheckpointConversionError(
          f"{self.where}: parameter {key!r} has dtype {value.dtype}, expected floating point.")
    if not np.all(np.isfinite(value.astype(np.float32))):
      raise CheckpointConversionError(f"{self.where}: parameter {key!r} has non-finite values.")
    return value

  def check_no_extra(self, prefixes: Iterable[str],
                     ignore: Callable[[str], bool] = lambda k: False):
    """Raises if an array under `prefixes` was not consumed (e.g. more layers than the config)."""
    prefixes = tuple(prefixes)
    extra = sorted(k for k in self._arrays
                   if k.startswith(prefixes) and k not in self.used and not ignore(k))
    if extra:
      raise CheckpointConversionError(
          f"{self.where}: encoder parameter(s) {extra[:5]} have no place in the configured "
          f"encoder ({len(extra)} unused); does the config's num_layers / MLP type match?")


def _fmt(shapes: list[tuple[int, ...]]) -> str:
  return " or ".join(str(s) for s in shapes)


def assemble(cfg: T5EncoderConfig, globals_: Mapping[str, np.ndarray],
             per_layer: list[Mapping[str, np.ndarray]]) -> dict:
  """Stacks per-layer arrays and nests everything like `nnx.to_pure_dict` of T5Encoder's params."""
  if len(per_layer) != cfg.num_layers:
    raise CheckpointConversionError(f"expected {cfg.num_layers} layers, got {len(per_layer)}.")
  pdt = np.dtype(DTYPES[cfg.param_dtype])
  flat: dict[str, np.ndarray] = {}
  for name, shape in global_shapes(cfg).items():
    flat[name] = _cast(globals_[name], shape, name, pdt)
  for name, shape in layer_shapes(cfg).items():
    flat["layers/" + name] = np.stack(
        [_cast(layer[name], shape, f"layer {i} {name}", pdt) for i, layer in enumerate(per_layer)])
  return unflatten(flat)


def _cast(x: np.ndarray, shape: tuple[int, ...], name: str, dtype: np.dtype) -> np.ndarray:
  if tuple(x.shape) != shape:  # a converter bug, not a checkpoint problem
    raise CheckpointConversionError(f"{name}: converted shape {x.shape} != {shape}.")
  return np.ascontiguousarray(x.astype(np.float32, copy=False).astype(dtype, copy=False))


def flatten(tree: Mapping, prefix: str = "", *,
            is_leaf: Callable[[Mapping], bool] | None = None) -> dict[str, object]:
  """Nested dict -> {"a/b/c": leaf}; a mapping for which `is_leaf` is true stays one leaf.

  An empty sub-mapping has no leaves and leaves no key, as with `flax.traverse_util.flatten_dict`'s
  default: a parameter tree's empty module holds no weights, so a checkpoint and the model's
  template agree on the names that carry arrays. Hence `unflatten(flatten(t)) == t` exactly when
  `t` has no empty sub-mapping."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping) and not (is_leaf and is_leaf(v)):
      out.update(flatten(v, f"{prefix}{k}/", is_leaf=is_leaf))
    else:
      out[f"{prefix}{k}"] = v
  return out


def unflatten(flat: Mapping[str, object]) -> dict:
  """{"a/b/c": leaf} -> nested dict (inverse of `flatten`)."""
  out: dict = {}
  for name, value in flat.items():
    node = out
    parts = name.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return out
