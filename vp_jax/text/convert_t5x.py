"""T5X checkpoints (e.g. gs://t5-data/pretrained_models/t5x/t5_1_1_xl) <-> T5Encoder parameters.

A T5X checkpoint directory `checkpoint_<step>/` holds a msgpack file `checkpoint` with
{"version": 3, "optimizer": {"target": params, "state": optimizer state}} (version 0: the
optimizer dict at the top). Each parameter leaf is either the array itself (small, unpartitioned
ones) or a TensorStore spec (zarr, gzip chunks) whose relative kvstore path, e.g.
`target.encoder.layers_0.attention.query.kernel`, is a folder next to the msgpack file. This is the
layout of the public T5 v1.1 T5X checkpoints and what t5x.checkpoints.load_t5x_checkpoint reads.
Checkpoints written by Orbax (a folder with `_METADATA`/`manifest.ocdbt`) are read with Orbax.

T5X parameter names (flaxformer / t5x.examples.t5, unscanned): `token_embedder/embedding [V, D]`,
`encoder/relpos_bias/rel_embedding [H, buckets]`, `encoder/layers_<i>/attention/{query,key,value}/
kernel [D, H*K]`, `.../out/kernel [H*K, D]`, `.../pre_attention_layer_norm/scale`,
`.../pre_mlp_layer_norm/scale`, `.../mlp/{wi_0,wi_1}/kernel [D, F]`, `.../mlp/wo/kernel [F, D]`,
`encoder/encoder_norm/scale`. Kernels are [in, out] (no transposes); the 1/sqrt(head_dim) scale is
already folded into the query kernel, as in HF.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any, Mapping

import numpy as np
from flax import serialization

from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.convert_common import CheckpointConversionError, Reader, assemble, flatten

_CHUNK_BYTES = 64 * 1024 * 1024  # T5X's target zarr chunk size


def find_checkpoint(path: str | os.PathLike, step: int | None = None) -> str:
  """The checkpoint folder: `path` itself, or `path/checkpoint_<step>` (latest if step is None)."""
  path = os.fspath(path)
  if os.path.isfile(path) and os.path.basename(path) == "checkpoint":
    return os.path.dirname(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such T5X checkpoint.")
  if step is None and (os.path.exists(os.path.join(path, "checkpoint")) or _is_orbax(path)):
    return path
  steps = sorted(int(m.group(1)) for m in (re.fullmatch(r"checkpoint_(\d+)", n)
                                           for n in os.listdir(path)) if m)
  if step is not None:
    if step not in steps:
      raise FileNotFoundError(f"{path}: no checkpoint_{step} (steps: {steps}).")
    return os.path.join(path, f"checkpoint_{step}")
  if not steps:
    raise FileNotFoundError(f"{path}: no T5X checkpoint (no 'checkpoint' file, no checkpoint_N).")
  return os.path.join(path, f"checkpoint_{steps[-1]}")


def _is_orbax(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, n)) for n in ("_METADATA", "manifest.ocdbt"))


def is_t5x_checkpoint(path: str | os.PathLike) -> bool:
  try:
    find_checkpoint(path)
    return True
  except FileNotFoundError:
    return False


class _TensorStoreArray:
  """A lazily read TensorStore-backed parameter (only `shape` until converted)."""

  def __init__(self, spec: dict, directory: str, name: str):
    self.spec, self.directory, self.name = spec, directory, name
    self.shape = tuple(spec.get("metadata", {}).get("shape", ()))

  def read(self) -> np.ndarray:
    import tensorstore as ts  # pylint: disable=import-outside-toplevel
    spec = dict(self.spec)
    kvstore = dict(spec["kvstore"]) if "kvstore" in spec else {"driver": "file"}
    rel = kvstore.pop("path", None) or spec.pop("path", None)
    if rel is None:
      raise CheckpointConversionError(f"{self.directory}: parameter {self.name!r} has a "
                                      "TensorStore spec without a path.")
    # Checkpoints written to GCS name the gcs driver; locally every array is a file folder.
    spec["kvstore"] = {"driver": "file", "path": os.path.join(self.directory, rel)}
    spec.pop("path", None)
    try:
      return np.asarray(ts.open(spec, open=True).result().read().result())
    except Exception as e:  # tensorstore raises ValueError/RuntimeError variants
      raise CheckpointConversionError(f"{self.directory}: cannot read parameter {self.name!r} "
                                      f"from {spec['kvstore']['path']}: {e}") from e


def _is_ts_spec(x: Any) -> bool:
  return isinstance(x, dict) and "driver" in x and ("kvstore" in x or "path" in x)


def read_arrays(path: str | os.PathLike, step: int | None = None) -> tuple[dict[str, Any], str]:
  """({T5X parameter name: array or lazy TensorStore array}, checkpoint folder) of `target`."""
  directory = find_checkpoint(path, step)
  msgpack = os.path.join(directory, "checkpoint")
  if os.path.exists(msgpack):
    with open(msgpack, "rb") as f:
      try:
        contents = serialization.msgpack_restore(f.read())
      except Exception as e:  # msgpack raises several unrelated exception types
        raise CheckpointConversionError(f"{msgpack}: not a T5X msgpack checkpoint ({e}).") from e
    state = contents if contents.get("version", 0) == 0 else contents.get("optimizer", {})
  elif _is_orbax(directory):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    state = ocp.PyTreeCheckpointer().restore(directory)
    state = state.get("optimizer", state) if isinstance(state, Mapping) else state
  else:
    raise FileNotFoundError(f"{directory}: no 'checkpoint' msgpack file and no Orbax metadata.")
  target = state.get("target") if isinstance(state, Mapping) else None
  if not isinstance(target, Mapping):
    raise CheckpointConversionError(f"{directory}: no 'target' (model parameters) in the "
                                    f"checkpoint; top-level keys {sorted(state)[:8]}.")
  arrays = {}
  for name, leaf in flatten(target, is_leaf=_is_ts_spec).items():
    arrays[name] = _TensorStoreArray(leaf, directory, name) if _is_ts_spec(leaf) else leaf
  return arrays, directory


def _load(x: Any) -> np.ndarray:
  return x.read() if isinstance(x, _TensorStoreArray) else np.asarray(x)


def convert(arrays: Mapping[str, Any], cfg: T5EncoderConfig, where: str = "checkpoint") -> dict:
  """T5X `target` parameter names -> T5Encoder pure-dict params (checked against `cfg`)."""
  r = Reader(arrays, where, load=_load)
  d, h, k, f, inner = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff, cfg.inner_dim
  if r.has("encoder/layers_0/mlp/wi/kernel"):
    raise CheckpointConversionError(
        f"{where}: parameter 'encoder/layers_0/mlp/wi/kernel' is a T5 v1.0 (ReLU, ungated) MLP; "
        "this encoder implements T5 v1.1 (wi_0/wi_1 gated GELU).")
  globals_ = {
      "token_embed": r.get("token_embedder/embedding", (cfg.vocab_size, d)),
      "rel_bias": r.get("encoder/relpos_bias/rel_embedding", (h, cfg.num_buckets)).T,
      "final_norm/scale": r.get("encoder/encoder_norm/scale", (d,)),
  }
  per_layer = []
  for i in range(cfg.num_layers):
    p = f"encoder/layers_{i}/"
    qkv = [(d, inner), (d, h, k)]
    per_layer.append({
        "attn_norm/scale": r.get(p + "pre_attention_layer_norm/scale", (d,)),
        "q": r.get(p + "attention/query/kernel", qkv).reshape(d, h, k),
        "k": r.get(p + "attention/key/kernel", qkv).reshape(d, h, k),
        "v": r.get(p + "attention/value/kernel", qkv).reshape(d, h, k),
        "o": r.get(p + "attention/out/kernel", [(inner, d), (h, k, d)]).reshape(h, k, d),
        "mlp_norm/scale": r.get(p + "pre_mlp_layer_norm/scale", (d,)),
        "wi_0": r.get(p + "mlp/wi_0/kernel", (d, f)),
        "wi_1": r.get(p + "mlp/wi_1/kernel", (d, f)),
        "wo": r.get(p + "mlp/wo/kernel", (f, d)),
    })
  r.check_no_extra(("encoder/",))
  return assemble(cfg, globals_, per_layer)


def load(path: str | os.PathLike, cfg: T5EncoderConfig, step: int | None = None
         ) -> tuple[T5EncoderConfig, dict]:
  """(config, params) of the encoder in a T5X checkpoint (the config must be given)."""
  arrays, directory = read_arrays(path, step)
  return cfg, convert(arrays, cfg, where=directory)


def to_t5x_arrays(params: Mapping, cfg: T5EncoderConfig) -> dict[str, np.ndarray]:
  """T5Encoder pure-dict params -> T5X `target` names and layouts (float32)."""
  flat = {}
  for name, value in flatten(params).items():
    flat[name] = np.asarray(value, np.float32)
  d, inner = cfg.d_model, cfg.inner_dim
  out = {"token_embedder/embedding": flat["token_embed"],
         "encoder/relpos_bias/rel_embedding": flat["rel_bias"].T,
         "encoder/encoder_norm/scale": flat["final_norm/scale"]}
  for i in range(cfg.num_layers):
    p = f"encoder/layers_{i}/"
    out[p + "pre_attention_layer_norm/scale"] = flat["layers/attn_norm/scale"][i]
    for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
      out[p + f"attention/{theirs}/kernel"] = flat[f"layers/{ours}"][i].reshape(d, inner)
    out[p + "attention/out/kernel"] = flat["layers/o"][i].reshape(inner, d)
    out[p + "pre_mlp_layer_norm/scale"] = flat["layers/mlp_norm/scale"][i]
    for name in ("wi_0", "wi_1", "wo"):
      out[p + f"mlp/{name}/kernel"] = flat[f"layers/{name}"][i]
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Halves the largest dimension's chunk until a chunk is at most 64 MiB (divides the shape)."""
  chunks = list(shape)
  while chunks and np.prod(chunks) * itemsize > _CHUNK_BYTES:
    i = int(np.argmax(chunks))
    divisors = [c for c in range(chunks[i] - 1, 0, -1) if shape[i] % c == 0]
    chunks[i] = divisors[0]
  return chunks


def save(model_dir: str | os.PathLike, step: int, arrays: Mapping[str, np.ndarray], *,
         inline_below: int = 0) -> str:
  """Writes `arrays` (T5X names, '/'-separated) as a T5X `checkpoint_<step>` (msgpack +
  TensorStore zarr, atomically: temporary folder, then rename). Arrays with fewer than
  `inline_below` elements go into the msgpack file itself, as T5X does for unpartitioned ones."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel
  model_dir = os.fspath(model_dir)
  final = os.path.join(model_dir, f"checkpoint_{step}")
  if os.path.exists(final):
    raise FileExistsError(f"{final} exists.")
  tmp = f"{final}.tmp-{int(time.time())}"
  os.makedirs(tmp)
  try:
    target: dict = {}
    for name, value in arrays.items():
      value = np.asarray(value)
      if value.size < inline_below:
        leaf: Any = value
      else:
        rel = "target." + name.replace("/", ".")
        leaf = {"driver": "zarr", "dtype": value.dtype.name,
                "kvstore": {"driver": "file", "path": rel},
                "metadata": {"compressor": {"id": "gzip"}, "shape": list(value.shape),
                             "chunks": _chunks(value.shape, value.dtype.itemsize)}}
        spec = dict(leaf, kvstore={"driver": "file", "path": os.path.join(tmp, rel)})
        ts.open(spec, create=True, open=True).result().write(value).result()
      node = target
      parts = name.split("/")
      for part in parts[:-1]:
        node = node.setdefault(part, {})
      node[parts[-1]] = leaf
    state = {"step": np.int32(step), "param_states": {}}
    blob = serialization.msgpack_serialize({"version": 3,
                                            "optimizer": {"target": target, "state": state}})
    with open(os.path.join(tmp, "checkpoint"), "wb") as f:
      f.write(blob)
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final
