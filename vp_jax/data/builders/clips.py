"""Turns a decoded video file into fixed-format clips: 8 fps, 17/41 frames, (H, W), 16 kHz audio.

- Time: clip k starts at `k * num_frames / fps` seconds; its frame j shows the source frame on screen
  at `start + j / fps` (the last source frame whose timestamp is <= that time), so 30 fps input is
  subsampled and 5 fps input repeats frames, both at the true timing. A file that does not cover the
  whole clip is too short — never looped or padded.
- Space: scale so the frame covers (H, W) (FFmpeg area filter while decoding), then centre-crop.
- Audio: the clip's own span of the 16 kHz track (`vp_jax.io.audio`), which must be complete.
"""
from __future__ import annotations

import math
import os

import numpy as np

from vp_jax.data import formats
from vp_jax.data.builders.common import BadExampleError
from vp_jax.io import audio as audio_io
from vp_jax.io import video as video_io


def cover_size(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int]:
  """Smallest (h, w) with the source aspect ratio that covers dst (both >= dst)."""
  (sh, sw), (th, tw) = src_hw, dst_hw
  scale = max(th / sh, tw / sw)
  return max(th, int(math.ceil(sh * scale - 1e-6))), max(tw, int(math.ceil(sw * scale - 1e-6)))


def center_crop(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """[..., H0, W0, C] -> [..., H, W, C] (centre)."""
  h0, w0 = frames.shape[-3:-1]
  th, tw = hw
  if h0 < th or w0 < tw:
    raise ValueError(f"center_crop: frames {h0}x{w0} smaller than {th}x{tw}.")
  top, left = (h0 - th) // 2, (w0 - tw) // 2
  return frames[..., top:top + th, left:left + tw, :]


def resample_indices(times: np.ndarray, start_s: float, num_frames: int,
                     fps: float = formats.FPS) -> np.ndarray:
  """Source frame index on screen at each target time start + j / fps (sample and hold)."""
  targets = start_s + np.arange(num_frames) / fps
  return np.searchsorted(np.asarray(times), targets + 1e-6, side="right") - 1


def available_clips(times: np.ndarray, num_frames: int, fps: float = formats.FPS) -> int:
  """How many back-to-back clips the frame timestamps cover (last frame time >= needed)."""
  last = float(times[-1])
  # Clip k needs a frame at k * T / fps + (T - 1) / fps.
  return max(0, int(math.floor((last - (num_frames - 1) / fps) * fps / num_frames + 1e-6)) + 1)


def video_clips(path: str, *, hw: tuple[int, int], num_frames: int, max_clips: int = 1,
                audio: str = "optional", audio_path: str | None = None,
                fps: float = formats.FPS, sample_rate: int = audio_io.SAMPLE_RATE):
  """Decodes `path` and yields (start_s, frames uint8 [T, H, W, 3], wave float32 [N] or None).

  audio: "require" (no audio -> BadExampleError), "optional" (None when absent), "ignore".
  Raises BadExampleError(reason=...) for missing/corrupt/too short files and missing audio.
  """
  if not os.path.exists(path):
    raise BadExampleError(path, "missing_file", "listed in the captions file but not found")
  try:
    info = video_io.probe(path)
    size = cover_size((info.height, info.width), hw)
    # Decode only as far as the clips reach (long files are not decoded to the end).
    frames, times = video_io.read_frames(path, size=size,
                                         max_seconds=(max_clips * num_frames - 1) / fps)
  except video_io.VideoError as e:
    raise BadExampleError(path, "corrupt", str(e)) from e
  count = min(max_clips, available_clips(times, num_frames, fps))
  if count < 1:
    have = float(times[-1]) + (1.0 / info.fps if info.fps else 0.0)
    raise BadExampleError(path, "too_short",
                          f"{len(frames)} frames spanning {have:.2f} s; a {num_frames}-frame clip "
                          f"at {fps:g} fps needs {num_frames / fps:.3f} s")
  wave = None
  if audio != "ignore":
    try:
      if audio_path is not None:
        if not os.path.exists(audio_path):
          raise audio_io.AudioError(f"{audio_path}: no such file.")
        wave = audio_io.read_audio(audio_path, sample_rate)
      else:
        wave = audio_io.read_container_audio(path, sample_rate, missing_ok=True)
    except audio_io.AudioError as e:
      if audio == "require":
        raise BadExampleError(path, "missing_audio", str(e)) from e
      wave = None
    if wave is None and audio == "require":
      raise BadExampleError(path, "missing_audio", "no audio track and no audio file given")
  need = formats.audio_samples(num_frames, sample_rate, fps)
  for k in range(count):
    start = k * num_frames / fps
    clip = center_crop(frames[resample_indices(times, start, num_frames, fps)], hw)
    clip_wave = None
    if wave is not None:
      a = int(round(start * sample_rate))
      clip_wave = wave[a:a + need]
      if clip_wave.size < need:
        if k == 0 and audio == "require":
          raise BadExampleError(path, "missing_audio",
                                f"audio has {wave.size} samples, clip needs {need} at "
                                f"{sample_rate} Hz")
        if k == 0:
          clip_wave = None  # optional audio that does not cover the clip is treated as absent
        else:
          break  # later clips stop where the audio stops when the first clip had audio
    yield start, np.ascontiguousarray(clip), clip_wave
