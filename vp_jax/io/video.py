"""Video files in and out with PyAV: read frames (+ audio), write mp4/mov/webm (+ audio), gif.

The one place that knows container/codec details, shared by the tfds builders (reading user
folders), the synthetic dataset (writing previews) and generation (writing samples). Frames at this
boundary are uint8 `[T, H, W, 3]` RGB; audio is handed to `vp_jax.io.audio` for the 16 kHz mono
conversion, so every audio consumer shares one resampler.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import av
import numpy as np
from PIL import Image

from vp_jax.io import audio as audio_io


class VideoError(ValueError):
  """A file or array that cannot be used as video; the message names it."""


@dataclasses.dataclass(frozen=True)
class VideoStreamInfo:
  """What the container says about its first video stream (before decoding)."""
  fps: float           # average frame rate (frames / second)
  duration_s: float    # stream (or container) duration, 0.0 when unknown
  width: int
  height: int
  has_audio: bool


def probe(path: str) -> VideoStreamInfo:
  """Opens the container and reads stream metadata only."""
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f"{path}: no video stream.")
      stream = container.streams.video[0]
      # FFmpeg's own estimate (av_guess_frame_rate: the stream's base rate unless that is a
      # timescale, as in 90000 fps VFR streams). average_rate reads 25/3 for an 8 fps gif whose
      # delays alternate 13 / 12 cs; guessed_rate reads 8.
      fps = float(stream.guessed_rate or stream.average_rate or 0)
      if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
      elif container.duration is not None:
        duration = container.duration / av.time_base
      else:
        duration = 0.0
      return VideoStreamInfo(fps=fps, duration_s=duration, width=stream.codec_context.width,
                             height=stream.codec_context.height,
                             has_audio=bool(container.streams.audio))
  except av.FFmpegError as e:
    raise VideoError(f"{path}: cannot open video ({e}).") from e


def read_frames(path: str, *, size: tuple[int, int] | None = None,
                max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Decodes the frames of the first video stream (all, or up to the first one past `max_seconds`).

  Returns (frames uint8 [T, H, W, 3], timestamps float64 [T] in seconds from the stream start).
  `size=(height, width)` scales each frame in FFmpeg (area interpolation) while decoding, which is
  much cheaper than decoding full size and resizing in numpy.
  """
  frames, times = [], []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f"{path}: no video stream.")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      start = None
      for index, frame in enumerate(container.decode(stream)):
        if size is not None:
          frame = frame.reformat(width=size[1], height=size[0], format="rgb24",
                                 interpolation="AREA")
          frames.append(frame.to_ndarray())
        else:
          frames.append(frame.to_ndarray(format="rgb24"))
        t = frame.time
        if t is None:  # no pts: fall back to the nominal rate
          rate = float(stream.average_rate or 0) or 1.0
          t = index / rate
        if start is None:
          start = t
        times.append(t - start)
        if max_seconds is not None and times[-1] > max_seconds:
          break
  except av.FFmpegError as e:
    raise VideoError(f"{path}: cannot decode video ({e}).") from e
  if not frames:
    raise VideoError(f"{path}: no decodable video frames.")
  return np.stack(frames), np.asarray(times, np.float64)


def read_video(path: str, *, size: tuple[int, int] | None = None, with_audio: bool = True,
               sample_rate: int = audio_io.SAMPLE_RATE):
  """Frames, their timestamps and (if present and asked for) the audio track.

  Returns (frames uint8 [T,H,W,3], times float64 [T], audio float32 [N] at `sample_rate` or None).
  """
  frames, times = read_frames(path, size=size)
  wave = None
  if with_audio:
    wave = audio_io.read_container_audio(path, sample_rate, missing_ok=True)
  return frames, times, wave


def _check_frames(frames: np.ndarray, path: str) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise VideoError(f"{path}: frames must be [T, H, W, 3] with T > 0, got {frames.shape}.")
  if frames.dtype != np.uint8:
    if not np.issubdtype(frames.dtype, np.floating):
      raise VideoError(f"{path}: frames must be uint8 or float in [0, 1], got {frames.dtype}.")
    frames = np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)
  return frames


def _atomic_target(path: str, suffix: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=suffix, dir=directory)
  os.close(fd)
  return tmp


# extension -> (container format, video codec, audio codec, video codec options)
CONTAINERS = {
    ".mp4": ("mp4", "libx264", "aac", lambda crf: {"crf": str(crf), "preset": "veryfast"}),
    ".mov": ("mov", "libx264", "aac", lambda crf: {"crf": str(crf), "preset": "veryfast"}),
    ".webm": ("webm", "libvpx-vp9", "libopus", lambda crf: {"crf": str(crf), "b": "0",
                                                           "deadline": "realtime"}),
}


def write_video(path: str, frames: np.ndarray, fps: float = 8.0, *,
                audio: np.ndarray | None = None, sample_rate: int = audio_io.SAMPLE_RATE,
                crf: int = 18) -> str:
  """Writes mp4/mov (H.264 + AAC) or webm (VP9 + Opus) by extension, yuv420p, atomically.

  `audio` ([N] float in [-1, 1] at `sample_rate`) becomes a mono track. Odd frame sizes are padded
  by one edge row/column (yuv420p needs even sizes).
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in CONTAINERS:
    raise VideoError(f"{path}: cannot write {ext!r}; supported: {sorted(CONTAINERS)} (and .gif "
                     "through write_gif).")
  fmt, vcodec, acodec, options = CONTAINERS[ext]
  frames = _check_frames(frames, path)
  t, h, w, _ = frames.shape
  if h % 2 or w % 2:
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  tmp = _atomic_target(path, ext)
  try:
    with av.open(tmp, mode="w", format=fmt) as container:
      stream = container.add_stream(vcodec, rate=_fraction(fps))
      stream.width, stream.height = frames.shape[2], frames.shape[1]
      stream.pix_fmt = "yuv420p"
      stream.options = options(crf)
      astream = None
      if audio is not None:
        wave = audio_io.check_wave(np.clip(np.asarray(audio, np.float32), -1, 1), name=path)
        astream = container.add_stream(acodec, rate=sample_rate)
        astream.layout = "mono"
      for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
      if astream is not None:
        chunk = 960
        for i in range(0, wave.size, chunk):
          aframe = av.AudioFrame.from_ndarray(wave[i:i + chunk][None], format="flt",
                                              layout="mono")
          aframe.sample_rate = sample_rate
          aframe.pts = i
          for packet in astream.encode(aframe):
            container.mux(packet)
        for packet in astream.encode():
          container.mux(packet)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_mp4(path: str, frames: np.ndarray, fps: float = 8.0, *, audio: np.ndarray | None = None,
              sample_rate: int = audio_io.SAMPLE_RATE, crf: int = 18) -> str:
  """H.264 (yuv420p) mp4, with an AAC mono track when `audio` ([N] float) is given."""
  if not path.lower().endswith(".mp4"):
    raise VideoError(f"{path}: write_mp4 writes .mp4 files (use write_video for .mov/.webm).")
  return write_video(path, frames, fps, audio=audio, sample_rate=sample_rate, crf=crf)


def gif_durations_ms(num_frames: int, fps: float) -> list[int]:
  """Per-frame gif durations in ms. GIF stores delays in centiseconds, so 8 fps (12.5 cs) cannot be
  one constant delay (12 cs plays 4 % fast); each frame instead ends at its ideal time rounded to
  the centisecond (13, 12, 13, 12, ... at 8 fps), so frame i starts within 5 ms of i / fps. Above
  100 fps every frame gets GIF's shortest delay, 1 cs, and the clip plays slower than `fps`."""
  if fps <= 0:
    raise VideoError(f"gif: fps={fps} must be positive.")
  ends = [int(np.floor((i + 1) * 100.0 / fps + 0.5)) for i in range(num_frames)]
  starts = [0] + ends[:-1]
  return [10 * max(e - s, 1) for s, e in zip(starts, ends)]


def write_gif(path: str, frames: np.ndarray, fps: float = 8.0, *, loop: int = 0) -> str:
  """Writes an animated gif (Pillow, adaptive palette per frame), atomically. Frame timing:
  `gif_durations_ms`. Pillow merges consecutive identical frames into one with the summed delay,
  so a reader may see fewer frames than were written, at the right times."""
  frames = _check_frames(frames, path)
  images = [Image.fromarray(f) for f in frames]
  tmp = _atomic_target(path, ".gif")
  try:
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=gif_durations_ms(len(images), fps), loop=loop, disposal=1)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _fraction(fps: float):
  from fractions import Fraction
  return Fraction(fps).limit_denominator(1001)
