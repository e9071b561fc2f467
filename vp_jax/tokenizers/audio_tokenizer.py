"""The audio tokenizer API (docs/interfaces.md): SoundStream codes for VideoPoet's LM.

    tok = AudioTokenizer.load(workdir_or_checkpoint_dir)   # a SoundStream training run
    tok.num_frames(34_000) -> 106
    ids = tok.encode(wave)      # float32 [B, N] (or [N]) mono 16 kHz in [-1, 1] -> int32 [B, 4, T]
    wave = tok.decode(ids)      # int32 [B, L<=4, T] -> float32 [B, T * 320] (or num_samples)
    flat = flatten_level_major(ids)         # [..., 4, T] -> [..., 4T]: all of level 0, then 1, ...
    ids = unflatten_level_major(flat, levels=4)

Input handling (each case is tested):
- frames: T = N // 320 (see `SoundStreamConfig`); a trailing partial frame is dropped, so 34,000
  samples -> 106 frames and decode gives 33,920 samples unless `num_samples` pads/trims the output;
- `sample_rate` other than 16 kHz: resampled with `vp_jax.io.audio.resample` (polyphase);
- multi-channel arrays ([B, N, C]): rejected (down-mix with `vp_jax.io.audio.to_mono` first;
  `encode_file` reads any file as mono 16 kHz);
- empty, shorter than one frame (320 samples), NaN/inf, integer PCM or samples outside [-1, 1]:
  `AudioError` naming the input and the row;
- silent clips are valid audio: they encode to the codes of silence and decode to near-silence.
Encode and decode are jitted (one compile per input shape) and batched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vp_jax.checkpoint.manager import Checkpointer, CheckpointError
from vp_jax.io import audio as audio_io
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.model import SoundStream
from vp_jax.models.soundstream.train import CONFIG_FILE, load_config

AudioError = audio_io.AudioError
# Bumped when the same weights would give different codes (framing, resampling, input handling).
API_VERSION = "soundstream/1"
CODEC_PARTS = ("encoder", "decoder")    # parameter subtrees the API needs (no discriminators)
STATE_PARTS = ("quantizer",)            # non-parameter subtrees (the EMA codebooks)


def flatten_level_major(ids: np.ndarray | jax.Array) -> Any:
  """[..., L, T] -> [..., L * T]: the whole clip at level 0, then level 1, ... (paper 3.1)."""
  if ids.ndim < 2:
    raise ValueError(f"flatten_level_major: expected [..., levels, T] ids, got shape {ids.shape}.")
  return ids.reshape(*ids.shape[:-2], ids.shape[-2] * ids.shape[-1])


def unflatten_level_major(flat: np.ndarray | jax.Array, levels: int = 4) -> Any:
  """[..., L * T] -> [..., L, T], the inverse of `flatten_level_major`."""
  if flat.ndim < 1 or flat.shape[-1] % levels:
    raise ValueError(f"unflatten_level_major: last dimension of shape {flat.shape} is not a "
                     f"multiple of levels={levels}.")
  return flat.reshape(*flat.shape[:-1], levels, flat.shape[-1] // levels)


def _abstract_model(cfg: SoundStreamConfig):
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: SoundStream(cfg, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param, ...)


def _find_config(path: str) -> str:
  for candidate in (path, os.path.dirname(os.path.abspath(path))):
    f = os.path.join(candidate, CONFIG_FILE)
    if os.path.exists(f):
      return f
  raise CheckpointError(f"{path}: no {CONFIG_FILE} here or in the parent directory; pass a "
                        f"SoundStream training workdir or its checkpoints/ directory.")


class AudioTokenizer:
  """Batched, jitted SoundStream encode/decode from a config and restored params/variables."""

  def __init__(self, config: SoundStreamConfig, params: dict, variables: dict,
               mesh: jax.sharding.Mesh | None = None):
    self.config, self.mesh = config, mesh
    graphdef, params_t, rest_t = _abstract_model(config)
    self._graphdef = graphdef
    self._params_t, self._rest_t = params_t, rest_t
    # Only the codec: the discriminators stay abstract (never allocated).
    state = {"params": {k: params[k] for k in CODEC_PARTS},
             "rest": {k: variables[k] for k in STATE_PARTS}}
    if mesh is not None:
      state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    self._state = state
    self._encode = jax.jit(self._encode_fn)
    self._decode = jax.jit(self._decode_fn)
    self.checkpoint: str | None = None   # set by `load`: the checkpoints dir and step restored
    self.step: int | None = None

  # --- construction ------------------------------------------------------------------------------
  @classmethod
  def from_model(cls, model: SoundStream, mesh=None) -> "AudioTokenizer":
    """From an in-memory SoundStream module (e.g. the trainer's state merged back)."""
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return cls(model.cfg, nnx.to_pure_dict(params), nnx.to_pure_dict(rest), mesh)

  @classmethod
  def load(cls, checkpoint_dir_or_workdir: str, mesh: jax.sharding.Mesh | None = None,
           step: int | None = None) -> "AudioTokenizer":
    """From a SoundStream training workdir (holding soundstream_config.json and checkpoints/) or
    its checkpoints/ directory: restores the codec parameters and codebooks of `step` (default:
    the latest committed step), whatever mesh the run was trained on."""
    path = os.fspath(checkpoint_dir_or_workdir)
    cfg = load_config(_find_config(path))
    ckpt_dir = os.path.join(path, "checkpoints") if os.path.isdir(
        os.path.join(path, "checkpoints")) else path
    _, params_t, rest_t = _abstract_model(cfg)
    replicated = NamedSharding(mesh, PartitionSpec()) if mesh is not None else \
        jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = lambda t, keys: {k: jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        nnx.to_pure_dict(t)[k]) for k in keys}
    target = {"params": abstract(params_t, CODEC_PARTS), "rest": abstract(rest_t, STATE_PARTS)}
    ckpt = Checkpointer(ckpt_dir, create=False, async_save=False)
    try:
      state, step, _ = ckpt.restore_parts(target, step)
    finally:
      ckpt.close()
    tok = cls(cfg, state["params"], state["rest"], mesh)
    tok.checkpoint, tok.step = os.path.abspath(ckpt_dir), int(step)
    return tok

  def describe(self) -> dict[str, Any]:
    """What produced these codes (recorded by the tokenization job): the class, the API version,
    the checkpoint directory and step (None when built in memory) and a hash of the config."""
    config_json = json.dumps(dataclasses.asdict(self.config), sort_keys=True)
    return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "version": API_VERSION,
            "checkpoint": self.checkpoint, "step": self.step,
            "levels": self.config.num_levels, "codebook_size": self.config.codebook_size,
            "config_sha256": hashlib.sha256(config_json.encode()).hexdigest()[:16]}

  # --- pure functions (jitted) -------------------------------------------------------------------
  def _model(self, state) -> SoundStream:
    params = jax.tree.map(lambda x: x, self._params_t)
    rest = jax.tree.map(lambda x: x, self._rest_t)
    nnx.replace_by_pure_dict(params, state["params"])
    nnx.replace_by_pure_dict(rest, state["rest"])
    return nnx.merge(self._graphdef, params, rest)

  def _encode_fn(self, state, wave):
    return self._model(state).encode(wave)

  def _decode_fn(self, state, ids):
    return self._model(state).decode(ids)

  # --- public API --------------------------------------------------------------------------------
  @property
  def num_levels(self) -> int:
    return self.config.num_levels

  @property
  def codebook_size(self) -> int:
    return self.config.codebook_size

  def num_frames(self, num_samples: int) -> int:
    """Latent frames for `num_samples` samples at 16 kHz: num_samples // 320 (34,000 -> 106)."""
    return self.config.num_frames(num_samples)

  def _check_wave(self, wave, sample_rate: int, name: str) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim == 1:
      wave = wave[None]
    if wave.ndim != 2:
      raise AudioError(f"{name}: expected mono samples [B, N] or [N], got shape {wave.shape}; "
                       f"down-mix multi-channel audio with vp_jax.io.audio.to_mono first.")
    if not np.issubdtype(wave.dtype, np.floating):
      raise AudioError(f"{name}: expected float samples in [-1, 1], got {wave.dtype} (integer "
                       f"PCM: divide by 32768).")
    if wave.shape[0] == 0 or wave.shape[1] == 0:
      raise AudioError(f"{name}: empty audio (shape {wave.shape}).")
    bad = ~np.all(np.isfinite(wave), axis=1)
    if bad.any():
      raise AudioError(f"{name}: rows {np.flatnonzero(bad).tolist()} contain NaN or infinite "
                       f"samples.")
    if sample_rate != self.config.sample_rate:
      wave = audio_io.resample(wave, sample_rate, self.config.sample_rate)
    peak = float(np.max(np.abs(wave)))
    if peak > 1.0 + 1e-3:
      raise AudioError(f"{name}: samples must be in [-1, 1], peak is {peak:.3f}; normalize first.")
    if wave.shape[1] < self.config.hop_length:
      raise AudioError(f"{name}: {wave.shape[1]} samples at {self.config.sample_rate} Hz is "
                       f"shorter than one frame ({self.config.hop_length} samples).")
    return wave.astype(np.float32)

  def encode(self, wave, sample_rate: int = audio_io.SAMPLE_RATE, name: str = "wave") -> np.ndarray:
    """float [B, N] or [N] mono audio -> int32 [B, levels, N // 320] codes in [0, 1024)."""
    wave = self._check_wave(wave, sample_rate, name)
    n = self.num_frames(wave.shape[1]) * self.config.hop_length
    return np.asarray(self._encode(self._state, jnp.asarray(wave[:, :n])))

  def decode(self, ids, num_samples: int | None = None) -> np.ndarray:
    """int [B, L, T] codes (L <= levels: coarser bitrates use the leading levels) -> float32
    [B, T * 320] in [-1, 1], zero-padded or trimmed to `num_samples` if given."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
      ids = ids[None]
    cfg = self.config
    if ids.ndim != 3 or not 1 <= ids.shape[1] <= cfg.num_levels or ids.shape[2] == 0:
      raise ValueError(f"decode: expected ids [B, levels<={cfg.num_levels}, T>=1], got shape "
                       f"{ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= cfg.codebook_size:
      raise ValueError(f"decode: ids must be integers in [0, {cfg.codebook_size}), got "
                       f"{ids.dtype} in [{ids.min()}, {ids.max()}].")
    wave = np.clip(np.asarray(self._decode(self._state, jnp.asarray(ids, jnp.int32))), -1.0, 1.0)
    if num_samples is not None:
      if num_samples < wave.shape[1]:
        wave = wave[:, :num_samples]
      else:
        wave = np.pad(wave, ((0, 0), (0, num_samples - wave.shape[1])))
    return wave

  def encode_file(self, path: str) -> np.ndarray:
    """Any audio file (read as 16 kHz mono by vp_jax.io.audio) -> int32 [1, levels, T]."""
    return self.encode(audio_io.read_audio(path, self.config.sample_rate), name=path)

  def decode_to_file(self, ids, path: str, num_samples: int | None = None) -> str:
    """Decodes one clip's ids [levels, T] (or [1, levels, T]) and writes a 16 kHz wav."""
    wave = self.decode(ids, num_samples)
    if wave.shape[0] != 1:
      raise ValueError(f"decode_to_file: one clip at a time, got a batch of {wave.shape[0]}.")
    return audio_io.write_wav(path, wave[0], self.config.sample_rate)
