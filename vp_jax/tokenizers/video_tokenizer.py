"""The video tokenizer API the rest of vp_jax uses (docs/interfaces.md): MAGVIT-v2 codes in
[0, 2^18) for videos of 1 + 4k frames and for images (T = 1), with COMMIT encoding.

    tok = VideoTokenizer.load(workdir_or_checkpoints_dir, mesh=None)
    tok.latent_shape(17, 128, 128) -> (5, 16, 16)
    ids = tok.encode(frames)            # uint8 [B,T,H,W,3] or float [0,1] -> int32 [B,T',H',W']
    frames = tok.decode(ids)            # -> float32 [B,T,H,W,3] in [0,1]
    cond, target = tok.commit_encode(frames, visible)   # visible: bool [B,T,H,W]
    cond = tok.commit_condition(frames, visible)        # the condition alone

Encode/decode are jit-compiled once per input shape, with the batch sharded over the mesh's data
axes (padded up to a multiple of them and sliced back) and the weights replicated. Pixel-range
conversion ([0,1] <-> the model's [-1,1]) and input checks live here.
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.tokenizer import MagvitTokenizer, create_tokenizer
from vp_jax.tokenizers.cpu_compile import CONVS, conv_inference_jit, conv_operand_params

# Bumped when the same weights would give different codes (pixel conversion, COMMIT fill, ...).
API_VERSION = "magvit-v2/1"
# Bumped when cpu_convs="onednn_bf16" alone would give different codes from the same weights:
# 2 (stop 44): the narrow convs (the encoder's conv to the latent channels, the decoder's to RGB)
# take bfloat16 operands too, where they were float32 tap products.
BF16_CONVS_REVISION = 2
# COMMIT: masked pixels of the condition video are set to this value (mid-grey, 0 in [-1, 1]).
COMMIT_FILL = 0.5
# How encode/decode run their convolutions on CPU (`VideoTokenizer(cpu_convs=...)`).
CPU_CONVS = CONVS


def check_frames(frames: Any, name: str = "frames") -> np.ndarray | jax.Array:
  """Validates [B, T, H, W, 3] uint8 or float in [0, 1]; raises ValueError naming `name`."""
  shape = getattr(frames, "shape", None)
  if shape is None:
    frames = np.asarray(frames)
    shape = frames.shape
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"{name}: expected [B, T, H, W, 3] (rank 5, RGB), got shape {tuple(shape)}.")
  dtype = np.dtype(frames.dtype)
  if dtype == np.uint8:
    return frames
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"{name}: dtype {dtype}; pass uint8 (0..255) or float in [0, 1].")
  lo, hi = float(jnp.min(frames)), float(jnp.max(frames))
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
    raise ValueError(f"{name}: float values span [{lo:.4g}, {hi:.4g}]; expected [0, 1] (uint8 "
                     f"frames are also accepted; for [-1, 1] data pass (x + 1) / 2).")
  return frames


def _to_model(frames: jax.Array) -> jax.Array:
  if frames.dtype == jnp.uint8:
    return frames.astype(jnp.float32) / 127.5 - 1.0
  return frames.astype(jnp.float32) * 2.0 - 1.0


class VideoTokenizer:
  """The MAGVIT-v2 tokenizer as the rest of the system uses it: jit-compiled, batch-sharded
  `encode(frames) -> ids` and `decode(ids) -> frames` ([0, 1] or uint8 frames, int32 ids in
  [0, 2^D)), COMMIT conditions for inpainting/outpainting, and `load` from a training workdir.
  Inputs are checked on the host (rank, 1 + 4k frames, range, dtype) before anything runs.
  `cpu_convs`: on CPU, "onednn" runs the convolutions by oneDNN where XLA:CPU has it
  (`vp_jax.nn.onednn_conv`), "xla" keeps XLA's own; the same function either way.
  "onednn_bf16" also rounds their operands to bfloat16 (float32 sums, the numerics of a TPU at
  JAX's default precision) where the CPU has AVX512_BF16 or AMX: about twice as fast, codes and
  frames a little different (docs/magvit.md "Speed"); `describe()` records it."""

  def __init__(self, config: MagvitConfig, params: dict, mesh: jax.sharding.Mesh | None = None,
               cpu_convs: str = "onednn"):
    config.validate()
    if cpu_convs not in CPU_CONVS:
      raise ValueError(f"VideoTokenizer cpu_convs={cpu_convs!r}; use one of {CPU_CONVS}.")
    self.config = config
    self.mesh = mesh if mesh is not None else _default_mesh()
    abstract = nnx.eval_shape(lambda: create_tokenizer(config))
    self._graphdef, state = nnx.split(abstract)
    self._state_template = state
    template = nnx.to_pure_dict(state)
    _check_tree(params, template)
    self._params = jax.device_put(conv_operand_params(params, self.mesh, cpu_convs),
                                  NamedSharding(self.mesh, PartitionSpec()))
    self._data_ways = math.prod(self.mesh.shape[a] for a in self._batch_axes())
    self.cpu_convs = cpu_convs
    self._encode = conv_inference_jit(self._encode_fn, self.mesh, cpu_convs, self._batch_axes())
    self._decode = conv_inference_jit(self._decode_fn, self.mesh, cpu_convs, self._batch_axes())
    self.checkpoint: str | None = None   # set by `load`: the workdir and step the weights came from
    self.step: int | None = None
    self.weights: str | None = None      # set by `load`: "ema" (the moving average) or "params"

  # -- construction -------------------------------------------------------------------------------
  @classmethod
  def load(cls, checkpoint_dir_or_workdir: str, mesh: jax.sharding.Mesh | None = None,
           step: int | None = None, weights: str = "auto",
           cpu_convs: str = "onednn") -> "VideoTokenizer":
    """From a `train_video_tokenizer` workdir (or its `checkpoints/` folder): the latest (or given)
    committed step's tokenizer weights and the workdir's `magvit_config.json`. `weights`: "auto"
    (the moving average of the weights where the run kept one, `TrainerConfig.ema_decay`, else the
    trained weights), "ema" or "params"."""
    from vp_jax.models.magvit.train import read_model_config, restore_tokenizer_params
    path = os.path.abspath(checkpoint_dir_or_workdir)
    if os.path.basename(path) == "checkpoints":
      path = os.path.dirname(path)
    config = read_model_config(path)
    mesh = mesh if mesh is not None else _default_mesh()
    params, step, weights = restore_tokenizer_params(
        path, step, NamedSharding(mesh, PartitionSpec()), weights)
    tok = cls(config, params, mesh, cpu_convs)
    tok.checkpoint, tok.step, tok.weights = path, int(step), weights
    return tok

  @classmethod
  def from_module(cls, tokenizer: MagvitTokenizer, mesh=None,
                  cpu_convs: str = "onednn") -> "VideoTokenizer":
    """Wraps an in-memory MagvitTokenizer (its config and current weights)."""
    return cls(tokenizer.cfg, nnx.to_pure_dict(nnx.state(tokenizer)), mesh, cpu_convs)

  def describe(self) -> dict[str, Any]:
    """What produced these codes (recorded by the tokenization job): the class, the API version,
    the checkpoint workdir, step and weights ("ema" or "params"; None when built in memory), a
    hash of the model config and, for "onednn_bf16", `cpu_convs` and BF16_CONVS_REVISION (its
    codes may differ from float32's, and between revisions)."""
    out = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "version": API_VERSION,
           "checkpoint": self.checkpoint, "step": self.step, "weights": self.weights,
           "codebook_size": self.config.codebook_size,
           "config_sha256": hashlib.sha256(self.config.to_json().encode()).hexdigest()[:16]}
    if self.cpu_convs == "onednn_bf16":
      out["cpu_convs"] = self.cpu_convs
      out["cpu_convs_revision"] = BF16_CONVS_REVISION
    return out

  # -- shapes -------------------------------------------------------------------------------------
  def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
    return self.config.latent_shape(t, h, w)

  def frame_shape(self, tl: int, hl: int, wl: int) -> tuple[int, int, int]:
    """Inverse of latent_shape: (T', H', W') -> (T, H, W)."""
    s = self.config.spatial_factor
    return 1 + (tl - 1) * self.config.temporal_factor, hl * s, wl * s

  # -- jitted functions ---------------------------------------------------------------------------
  def _batch_axes(self) -> tuple[str, ...]:
    """The mesh axes the batch is split over: data (and fsdp) when present, else the first."""
    axes = tuple(a for a in ("data", "fsdp") if a in self.mesh.shape)
    return axes or (self.mesh.axis_names[0],)

  def _model(self, params):
    state = jax.tree.map(lambda x: x, self._state_template)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self._graphdef, state)

  def _encode_fn(self, params, frames):
    return self._model(params).encode(_to_model(frames))

  def _decode_fn(self, params, ids):
    x = self._model(params).decode(ids)
    return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)

  def _shard_batch(self, x) -> jax.Array:
    """x padded (repeating its last row) to a multiple of the data ways, split over them."""
    pad = (-x.shape[0]) % self._data_ways
    if pad:
      x = jnp.concatenate([jnp.asarray(x), jnp.repeat(jnp.asarray(x)[-1:], pad, axis=0)])
    spec = PartitionSpec(self._batch_axes() or None, *([None] * (x.ndim - 1)))
    return jax.device_put(x, NamedSharding(self.mesh, spec))

  def _run(self, fn, x):
    b = x.shape[0]
    x = self._shard_batch(x)
    with jax.set_mesh(self.mesh):
      out = fn(self._params, x)
    return out[:b]

  # -- public API ---------------------------------------------------------------------------------
  def encode(self, frames) -> jax.Array:
    """uint8 [B,T,H,W,3] or float [0,1] -> int32 [B,T',H',W'] in [0, 2^D)."""
    frames = check_frames(frames)
    self.latent_shape(*frames.shape[1:4])
    return self._run(self._encode, frames)

  def decode(self, ids) -> jax.Array:
    """int [B,T',H',W'] in [0, 2^D) -> float32 [B,T,H,W,3] in [0, 1]."""
    shape = getattr(ids, "shape", None) or np.asarray(ids).shape
    if len(shape) != 4:
      raise ValueError(f"ids: expected [B, T', H', W'], got shape {tuple(shape)}.")
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"ids: dtype {ids.dtype}; expected integer token ids.")
    lo, hi = int(jnp.min(ids)), int(jnp.max(ids))
    if lo < 0 or hi >= self.config.codebook_size:
      raise ValueError(f"ids: values span [{lo}, {hi}]; expected [0, {self.config.codebook_size}).")
    return self._run(self._decode, ids.astype(jnp.int32))

  def commit_encode(self, frames, visible) -> tuple[jax.Array, jax.Array]:
    """COMMIT encoding (MAGVIT): condition = tokens of the video with invisible pixels replaced by
    mid-grey, target = tokens of the unmasked video. visible: bool [B,T,H,W] (True = kept).
    A caller that already has the video's tokens needs only `commit_condition`."""
    return self.commit_condition(frames, visible), self.encode(frames)

  def commit_condition(self, frames, visible) -> jax.Array:
    """The COMMIT condition alone: tokens of `frames` with the pixels where `visible` is False set
    to mid-grey (COMMIT_FILL). frames [B,T,H,W,3] uint8 or float [0,1]; visible bool [B,T,H,W]."""
    frames = check_frames(frames)
    visible = np.asarray(visible) if not isinstance(visible, jax.Array) else visible
    if tuple(visible.shape) != tuple(frames.shape[:4]):
      raise ValueError(f"visible: shape {tuple(visible.shape)}; expected {tuple(frames.shape[:4])} "
                       f"(the frames' [B, T, H, W]).")
    if visible.dtype != bool:
      raise ValueError(f"visible: dtype {visible.dtype}; expected bool (True = visible pixel).")
    f = jnp.asarray(frames)
    f = f.astype(jnp.float32) / 255.0 if f.dtype == jnp.uint8 else f.astype(jnp.float32)
    return self.encode(jnp.where(jnp.asarray(visible)[..., None], f, COMMIT_FILL))


def _default_mesh() -> jax.sharding.Mesh:
  """All devices on one data axis: the batch split over every device, weights replicated."""
  return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))


def _check_tree(params, template, path=""):
  if isinstance(template, dict):
    if not isinstance(params, dict) or set(params) != set(template):
      raise ValueError(f"VideoTokenizer: parameters at {path or '/'} have keys "
                       f"{sorted(params) if isinstance(params, dict) else type(params)}, the "
                       f"config's model has {sorted(template)}.")
    for k in template:
      _check_tree(params[k], template[k], f"{path}/{k}")
  elif tuple(np.shape(params)) != tuple(template.shape):
    raise ValueError(f"VideoTokenizer: parameter {path} has shape {tuple(np.shape(params))}, the "
                     f"config's model needs {tuple(template.shape)}.")
