"""Audio files in and out: read any soundfile-supported file as 16 kHz mono float32, write wav.

One place for the conventions every audio consumer shares (SoundStream training data, the tfds
builders, generation output): samples are float32 in [-1, 1], shape [N] (mono) at `sample_rate`;
multi-channel input is down-mixed by averaging channels; resampling is polyphase (scipy
`resample_poly`, Kaiser window) with the exact rational ratio, so 44.1 kHz -> 16 kHz gives
round(N * 16000 / 44100) samples.
"""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import soundfile
from scipy import signal

SAMPLE_RATE = 16_000  # SoundStream / VideoPoet audio rate.


class AudioError(ValueError):
  """A file or array that cannot be used as audio; the message names it."""


def to_mono(wave: np.ndarray, *, name: str = "audio") -> np.ndarray:
  """[N] or [N, C] -> [N] float32, averaging channels."""
  wave = np.asarray(wave)
  if wave.ndim == 1:
    return wave.astype(np.float32)
  if wave.ndim == 2:
    return wave.mean(axis=1).astype(np.float32)
  raise AudioError(f"{name}: expected [N] or [N, channels] samples, got shape {wave.shape}.")


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
  """Polyphase resampling along the last axis; identity when the rates match."""
  if sr_in <= 0 or sr_out <= 0:
    raise AudioError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}.")
  wave = np.asarray(wave, np.float32)
  if sr_in == sr_out:
    return wave
  g = math.gcd(int(sr_in), int(sr_out))
  return signal.resample_poly(wave, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def check_wave(wave: np.ndarray, *, name: str = "audio", allow_silent: bool = True) -> np.ndarray:
  """Validates a mono float wave: non-empty, finite; optionally not all zeros."""
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise AudioError(f"{name}: expected mono samples [N], got shape {wave.shape}.")
  if wave.size == 0:
    raise AudioError(f"{name}: empty audio (0 samples).")
  if not np.all(np.isfinite(wave)):
    raise AudioError(f"{name}: contains NaN or infinite samples.")
  if not allow_silent and not np.any(wave):
    raise AudioError(f"{name}: silent (all samples are zero).")
  return wave.astype(np.float32)


def read_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Reads an audio file -> float32 [N] mono at `sample_rate`."""
  try:
    wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    raise AudioError(f"{path}: cannot read audio ({e}).") from e
  wave = resample(to_mono(wave, name=path), sr, sample_rate)
  return check_wave(wave, name=path)


def write_wav(path: str, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
  """Writes float samples ([N] or [N, C], clipped to [-1, 1]) as 16-bit PCM wav, atomically."""
  wave = np.asarray(wave, np.float32)
  if wave.ndim not in (1, 2) or wave.shape[0] == 0:
    raise AudioError(f"{path}: cannot write audio of shape {wave.shape}.")
  if not np.all(np.isfinite(wave)):
    raise AudioError(f"{path}: refusing to write NaN or infinite samples.")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".wav", dir=directory)
  os.close(fd)
  try:
    soundfile.write(tmp, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
