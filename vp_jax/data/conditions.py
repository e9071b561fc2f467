"""Condition videos for the video-to-video tasks: central inpainting/outpainting masks, stylization.

Shared by the offline tokenization job (which tokenizes them once) and by generation (which builds
the same conditions from a user's video at inference), so training and inference see one definition.

- Inpainting hides a central box (default half the height and half the width) in every frame;
  outpainting shows only that box. `visible` is True where the pixel is kept — the mask passed to the
  video tokenizer's `commit_encode` (COMMIT, MAGVIT: the condition is tokenized from the masked video,
  the target from the full video).
- Stylization (paper 4.1): optical flow (dx, dy) and depth, each normalized, stacked on the channel
  axis as a 3-channel "video" that the tokenizer encodes like RGB. Flow is scaled by a fixed
  `flow_max` (in units of min(H, W) per frame; default 1/16 of the frame per frame), so speed is kept:
  channel = 0.5 + flow / (2 * flow_max * min(H, W)), clipped to [0, 1]; 0.5 = no motion. Depth is
  min-max normalized per frame (relative inverse depth, 1 = nearest, as MiDaS gives it).
"""
from __future__ import annotations

import numpy as np

MASKS = ("inpaint_central", "outpaint_central")
FLOW_MAX = 1.0 / 16.0


def central_box(height: int, width: int, fraction: float = 0.5) -> tuple[slice, slice]:
  """The central box covering `fraction` of the height and of the width (rounded to whole pixels)."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"central box fraction {fraction}: must be in (0, 1).")
  bh, bw = int(round(height * fraction)), int(round(width * fraction))
  top, left = (height - bh) // 2, (width - bw) // 2
  return slice(top, top + bh), slice(left, left + bw)


def visible_mask(kind: str, num_frames: int, height: int, width: int,
                 fraction: float = 0.5) -> np.ndarray:
  """bool [T, H, W], True = pixel kept in the condition video."""
  rows, cols = central_box(height, width, fraction)
  box = np.zeros((height, width), bool)
  box[rows, cols] = True
  if kind == "inpaint_central":
    keep = ~box
  elif kind == "outpaint_central":
    keep = box
  else:
    raise ValueError(f"mask kind {kind!r}: expected one of {MASKS}.")
  return np.broadcast_to(keep, (num_frames, height, width)).copy()


def stylization_condition(flow: np.ndarray, depth: np.ndarray, *,
                          flow_max: float = FLOW_MAX) -> np.ndarray:
  """flow float [T, H, W, 2] (pixels), depth [T, H, W] -> uint8 [T, H, W, 3] (dx, dy, depth)."""
  flow = np.asarray(flow, np.float32)
  depth = np.asarray(depth, np.float32)
  if flow.ndim != 4 or flow.shape[-1] != 2 or depth.shape != flow.shape[:-1]:
    raise ValueError(f"stylization_condition: flow must be [T, H, W, 2] and depth [T, H, W]; got "
                     f"{flow.shape} and {depth.shape}.")
  if not (np.all(np.isfinite(flow)) and np.all(np.isfinite(depth))):
    raise ValueError("stylization_condition: flow or depth has NaN or infinite values.")
  scale = 2.0 * flow_max * min(flow.shape[1], flow.shape[2])
  f = np.clip(0.5 + flow / scale, 0.0, 1.0)
  lo = depth.min(axis=(1, 2), keepdims=True)
  hi = depth.max(axis=(1, 2), keepdims=True)
  d = np.where(hi > lo, (depth - lo) / np.maximum(hi - lo, 1e-12), 0.0)
  out = np.concatenate([f, d[..., None]], axis=-1)
  return np.round(out * 255.0).astype(np.uint8)
