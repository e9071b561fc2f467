"""TextEncoder: captions -> frozen T5 embeddings [B, 64, D] + mask, batched and sharded over a mesh.

This is the API the offline tokenization job, the seqio tasks and generation use
(docs/interfaces.md). The weights are placed once, sharded by their logical axes under the
project's rules (parameters over `fsdp`/`tensor`, the batch over the data axes `data` x `fsdp`);
captions are encoded in fixed-size batches (one compilation) with the batch sharded across devices.
Embeddings at padded positions are exactly 0, so consumers may ignore the mask without reading
stray values; `num_truncated` reports captions cut at 64 tokens.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules
from vp_jax.parallel.sharding import logical_to_spec, state_shardings
from vp_jax.text import convert_hf, convert_t5x
from vp_jax.text.config import T5EncoderConfig, get_config
from vp_jax.text.convert_common import CheckpointConversionError, flatten, unflatten
from vp_jax.text.model import T5Encoder, apply_fn
from vp_jax.text.tokenizer import EOS_ID, Tokenizer

_IN_FLIGHT = 2  # batches dispatched ahead of the host copy (bounds device memory for outputs)


@dataclasses.dataclass(frozen=True)
class TextEmbeddings:
  """A batch of T5 encoder outputs with their padding mask (what the LM's text slots take)."""
  embeddings: np.ndarray     # float32 [B, L, D], 0 where mask is False (L = 64)
  mask: np.ndarray           # bool [B, L], True = real token
  num_truncated: np.ndarray  # int32 [B], SentencePiece pieces dropped to fit L

  def __post_init__(self):
    b = self.embeddings.shape[0]
    if self.mask.shape != self.embeddings.shape[:2] or self.num_truncated.shape != (b,):
      raise ValueError(f"TextEmbeddings: inconsistent shapes embeddings {self.embeddings.shape}, "
                       f"mask {self.mask.shape}, num_truncated {self.num_truncated.shape}.")


def params_fingerprint(params: Mapping) -> str:
  """sha256 over each parameter's name, shape, dtype and every value.

  All the bytes, not a sample: the id keys the text-embedding cache, and a fine-tune that moved
  only entries a sample skips would otherwise read the old encoder's embeddings. Hashing is done
  once per load (about a second per GB)."""
  h = hashlib.sha256()
  for name, value in sorted(flatten(params).items()):
    a = np.asarray(value)
    h.update(f"{name}:{a.shape}:{a.dtype}:".encode())   # before ascontiguousarray makes 0-d 1-d
    h.update(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)))
  return h.hexdigest()


class TextEncoder:
  """A frozen T5 encoder with its vocabulary: `encode(texts) -> TextEmbeddings`."""

  def __init__(self, config: T5EncoderConfig, params: Mapping, vocabulary: Tokenizer, *,
               mesh: jax.sharding.Mesh | None = None, rules="default", batch_size: int = 32,
               model_id: str | None = None):
    if vocabulary.vocab_size > config.vocab_size:
      raise ValueError(f"TextEncoder: the SentencePiece model has {vocabulary.vocab_size} pieces "
                       f"but the encoder's embedding has only {config.vocab_size} rows.")
    if batch_size <= 0:
      raise ValueError(f"TextEncoder: batch_size must be positive, got {batch_size}.")
    self.config = config
    self.vocabulary = vocabulary
    self.checkpoint: str | None = None   # set by `load`
    self.mesh = mesh if mesh is not None else make_mesh(MeshConfig(data=-1))
    self.rules = get_rules(rules)
    batch_spec = logical_to_spec(("batch", None), self.rules, self.mesh)
    ways = math.prod(self.mesh.shape[a] for a in _axes(batch_spec[0]))
    self.batch_size = -(-batch_size // ways) * ways  # a multiple of the batch-parallel devices
    self.model_id = model_id or (f"{config.name}-{config.dtype}-L{vocabulary.max_length}-"
                                 + hashlib.sha256(
                                     (params_fingerprint(params) + vocabulary.fingerprint
                                      + json.dumps(dataclasses.asdict(config), sort_keys=True)
                                      ).encode()).hexdigest()[:16])

    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(lambda: T5Encoder(config, rngs=nnx.Rngs(0)))
    template = nnx.state(abstract, nnx.Param)
    shardings = state_shardings(template, self.rules, self.mesh)
    self._params = self._place(params, nnx.to_pure_dict(template), shardings)
    self._batch_sharding = NamedSharding(self.mesh, batch_spec)
    out_sharding = NamedSharding(
        self.mesh, logical_to_spec(("batch", None, None), self.rules, self.mesh))

    apply = apply_fn(config)

    def forward(params, ids, mask):
      hidden = apply(params, ids, mask).astype(jnp.float32)  # [B, L, D]
      return jnp.where(mask[..., None], hidden, 0.0)

    self._forward = jax.jit(forward, in_shardings=(shardings, self._batch_sharding,
                                                   self._batch_sharding),
                            out_shardings=out_sharding)

  @staticmethod
  def _place(params: Mapping, template: Mapping, shardings: Mapping) -> dict:
    """Checks `params` against the model's parameter tree and puts each leaf in its sharding."""
    got, want, sh = flatten(params), flatten(template), flatten(shardings)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
      raise CheckpointConversionError(
          f"TextEncoder: parameters do not match the model: missing {missing[:5]}, "
          f"unexpected {extra[:5]}.")
    placed = {}
    for name, abstract in want.items():
      value = got[name]
      if tuple(np.shape(value)) != tuple(abstract.shape):
        raise CheckpointConversionError(f"TextEncoder: parameter {name!r} has shape "
                                        f"{tuple(np.shape(value))}, the model expects "
                                        f"{tuple(abstract.shape)}.")
      host = np.asarray(value).astype(abstract.dtype, copy=False)  # no extra copy of XL
      placed[name] = jax.make_array_from_callback(host.shape, sh[name], lambda idx, h=host: h[idx])
    return unflatten(placed)

  @classmethod
  def load(cls, checkpoint: str | os.PathLike, *, tokenizer: str | os.PathLike | Tokenizer | None
           = None, config: T5EncoderConfig | str | None = None, mesh=None, rules="default",
           batch_size: int = 32, dtype: str | None = None, param_dtype: str | None = None,
           model_id: str | None = None) -> "TextEncoder":
    """Loads a HF (config.json + safetensors / pytorch_model.bin) or T5X checkpoint.

    `config` (a T5EncoderConfig or preset name) is required for T5X checkpoints, which carry none;
    `tokenizer` defaults to `spiece.model` next to a HF checkpoint.
    """
    checkpoint = os.fspath(checkpoint)
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    if isinstance(config, str):
      config = get_config(config, **overrides)
    elif config is not None and overrides:
      config = dataclasses.replace(config, **overrides)
    if convert_hf.is_hf_checkpoint(checkpoint):
      if config is None:
        config = convert_hf.read_config(
            checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint), **overrides)
      config, params = convert_hf.load(checkpoint, config)
      default_spm = os.path.join(checkpoint if os.path.isdir(checkpoint)
                                 else os.path.dirname(checkpoint), "spiece.model")
    elif convert_t5x.is_t5x_checkpoint(checkpoint):
      if config is None:
        raise ValueError(f"{checkpoint}: T5X checkpoints carry no model config; pass config= "
                         "(a T5EncoderConfig or a preset name such as 't5-v1_1-xl').")
      config, params = convert_t5x.load(checkpoint, config)
      default_spm = None
    else:
      raise FileNotFoundError(f"{checkpoint}: neither a HF checkpoint ({convert_hf.WEIGHT_FILES}) "
                              "nor a T5X checkpoint (checkpoint_N/checkpoint).")
    if tokenizer is None:
      if default_spm is None or not os.path.exists(default_spm):
        raise FileNotFoundError(f"{checkpoint}: no spiece.model next to the weights; pass "
                                "tokenizer= (T5 v1.1 uses the cc_all.32000 SentencePiece model).")
      tokenizer = default_spm
    if not isinstance(tokenizer, Tokenizer):
      tokenizer = Tokenizer.load(tokenizer)
    enc = cls(config, params, tokenizer, mesh=mesh, rules=rules, batch_size=batch_size,
              model_id=model_id)
    enc.checkpoint = os.path.abspath(checkpoint)
    return enc

  def describe(self) -> dict[str, Any]:
    """What produced these embeddings (recorded by the tokenization job): the class, the config
    name, the checkpoint `load` read (None when built in memory), the SentencePiece model and the
    model id (a fingerprint of the weights, vocabulary and config)."""
    return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": self.config.name, "checkpoint": self.checkpoint,
            "tokenizer": self.vocabulary.source, "model_id": self.model_id}

  @property
  def max_length(self) -> int:
    return self.vocabulary.max_length

  @property
  def embed_dim(self) -> int:
    return self.config.d_model

  def encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Token ids int32 [B, L] + mask bool [B, L] -> float32 [B, L, D] (0 where mask is False)."""
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    if ids.ndim != 2 or mask.shape != ids.shape:
      raise ValueError(f"encode_ids: ids {ids.shape} and mask {mask.shape} must both be [B, L].")
    if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
      raise ValueError(f"encode_ids: ids must be in [0, {self.config.vocab_size}), got "
                       f"[{ids.min()}, {ids.max()}].")
    n, length = ids.shape
    out = np.zeros((n, length, self.config.d_model), np.float32)
    bs = self.batch_size
    pending: list[tuple[int, int, jax.Array]] = []  # dispatched batches not yet on the host

    def drain(keep: int):
      while len(pending) > keep:
        start, rows, hidden = pending.pop(0)
        out[start:start + rows] = _to_host(hidden)[:rows]

    with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
      for start in range(0, n, bs):
        chunk_ids = np.zeros((bs, length), np.int32)
        chunk_mask = np.zeros((bs, length), bool)
        chunk_ids[:, 0], chunk_mask[:, 0] = EOS_ID, True  # filler rows: an empty caption
        rows = min(bs, n - start)
        chunk_ids[:rows], chunk_mask[:rows] = ids[start:start + rows], mask[start:start + rows]
        pending.append((start, rows, self._forward(self._params, self._to_global(chunk_ids),
                                                   self._to_global(chunk_mask))))
        drain(_IN_FLIGHT)  # the device computes the next batches while the host copies this one
      drain(0)
    return out

  def encode(self, texts: Sequence[str]) -> TextEmbeddings:
    """Tokenizes (max 64 tokens, EOS-terminated) and encodes `texts`."""
    tokens = self.vocabulary.encode(texts)
    return TextEmbeddings(embeddings=self.encode_ids(tokens.ids, tokens.mask), mask=tokens.mask,
                          num_truncated=tokens.num_truncated)

  def _to_global(self, x: np.ndarray) -> jax.Array:
    # Every process holds the whole chunk; each supplies the rows of its own devices.
    return jax.make_array_from_callback(x.shape, self._batch_sharding, lambda idx: x[idx])


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)
