"""Writing the demo's samples: mp4 (with the audio track where there is audio), gif, wav, and a
contact sheet of every sample's frames in one PNG (nearest-neighbour upscaled: the demo's clips are
32 x 32)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from vp_jax.io.audio import write_wav
from vp_jax.io.video import write_gif, write_mp4

LABEL_WIDTH = 150


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """float [0, 1] (or uint8) frames -> uint8. Other integer or bool dtypes are refused: scaling
  them by 255 would silently turn 0..255 pixels white."""
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  if not np.issubdtype(frames.dtype, np.floating):
    raise ValueError(f"frames: dtype {frames.dtype}; pass uint8 (0..255) or float in [0, 1].")
  return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
  """[..., H, W, C] -> [..., H * scale, W * scale, C] by pixel repetition."""
  return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def write_clip(base: str, frames: np.ndarray, fps: float, *, audio: np.ndarray | None = None,
               scale: int = 1) -> list[str]:
  """frames uint8 [T, H, W, 3] -> base.mp4 (+ audio track), base.gif and base.wav (with audio)."""
  big = upscale(to_uint8(frames), scale)
  files = [write_mp4(base + ".mp4", big, fps, audio=audio), write_gif(base + ".gif", big, fps)]
  if audio is not None:
    files.append(write_wav(base + ".wav", np.clip(audio, -1.0, 1.0)))
  return files


def contact_sheet(path: str, rows: list[tuple[str, np.ndarray]], *, scale: int = 2) -> str:
  """One row per clip (its label, then every frame side by side) -> a PNG at `path`."""
  if not rows:
    raise ValueError("contact_sheet: no rows.")
  clips = [upscale(to_uint8(f), scale) for _, f in rows]
  t = max(c.shape[0] for c in clips)
  h, w = clips[0].shape[1:3]
  sheet = Image.new("RGB", (LABEL_WIDTH + t * (w + 2), len(rows) * (h + 2)), "white")
  draw = ImageDraw.Draw(sheet)
  for r, ((label, _), clip) in enumerate(zip(rows, clips)):
    y = r * (h + 2)
    draw.text((4, y + h // 2 - 6), label, fill="black")
    for i, frame in enumerate(clip):
      sheet.paste(Image.fromarray(frame), (LABEL_WIDTH + i * (w + 2), y))
  sheet.save(path)
  return path
