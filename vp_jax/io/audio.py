"""Audio files in and out: read any soundfile-supported file as 16 kHz mono float32, write wav.

One place for the conventions every audio consumer shares (SoundStream training data, the tfds
builders, generation output): samples are float32 in [-1, 1], shape [N] (mono) at `sample_rate`;
multi-channel input is down-mixed by averaging channels; resampling is polyphase (scipy
`resample_poly`, Kaiser window) with the exact rational ratio, so 44.1 kHz -> 16 kHz gives
round(N * 16000 / 44100) samples. Files soundfile cannot read (audio tracks inside mp4/webm/mov,
m4a, ...) are decoded with PyAV at their native rate and then go through the same down-mix and
resampler (`read_container_audio`).
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
  """Reads an audio file -> float32 [N] mono at `sample_rate`.

  wav/flac/ogg go through soundfile; anything else FFmpeg can demux (mp4, m4a, webm, mov, mp3)
  through PyAV.
  """
  if not os.path.exists(path):
    raise AudioError(f"{path}: no such file.")
  try:
    wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    try:
      return read_container_audio(path, sample_rate)
    except AudioError as e2:
      raise AudioError(f"{path}: cannot read audio (soundfile: {e}; {e2}).") from e
  wave = resample(to_mono(wave, name=path), sr, sample_rate)
  return check_wave(wave, name=path)


def read_container_audio(path: str, sample_rate: int = SAMPLE_RATE, *,
                         missing_ok: bool = False) -> np.ndarray | None:
  """Decodes the first audio stream of any FFmpeg container -> float32 [N] mono at `sample_rate`.

  Returns None when the container has no audio stream and `missing_ok`; otherwise that is an
  AudioError naming the file.
  """
  import av  # PyAV: imported here so wav-only users do not pay for it.

  chunks, native_rate = [], None
  try:
    with av.open(path) as container:
      if not container.streams.audio:
        if missing_ok:
          return None
        raise AudioError(f"{path}: no audio stream.")
      stream = container.streams.audio[0]
      native_rate = stream.codec_context.sample_rate or stream.rate
      # Float planar at the native rate and layout: [channels, samples] per decoded frame.
      converter = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=native_rate)
      for frame in container.decode(stream):
        for out in converter.resample(frame):
          chunks.append(out.to_ndarray())
      for out in converter.resample(None):
        chunks.append(out.to_ndarray())
  except av.FFmpegError as e:
    raise AudioError(f"{path}: cannot decode audio ({e}).") from e
  if not chunks:
    if missing_ok:
      return None
    raise AudioError(f"{path}: audio stream has no decodable samples.")
  wave = np.concatenate(chunks, axis=1).T  # [N, C]
  wave = resample(to_mono(wave, name=path), int(native_rate), sample_rate)
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
