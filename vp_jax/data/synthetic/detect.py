"""A simple detector of the synthetic labels in a clip: object colour, shape and motion direction.

For checking generated clips against the prompt they were generated from (the demo's quality figure)
with the same procedure as on real synthetic clips. It needs no training:

- colour: the palette colour (scene.COLOURS) with the most pixels within `tolerance` (RGB distance);
  backgrounds are muted, so they do not match;
- shape: on the frame where that colour covers the most pixels, two rotation-invariant ratios of the
  mask — circularity (area / pi r_max^2 around the centroid: circle 1.0, square and cross 0.64,
  triangle 0.41) and solidity (area / convex hull area: cross 0.71, the others ~1);
- direction: the centroid's displacement over the first `lead` frames (before a bounce can reverse
  it), "none" when below `min_speed_px` per frame.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from vp_jax.data.synthetic.scene import COLOURS

_PALETTE = np.asarray(list(COLOURS.values()), np.float32)   # [K, 3]
_NAMES = list(COLOURS)


def _colour_masks(frames: np.ndarray, tolerance: float) -> np.ndarray:
  """bool [K, T, H, W]: pixels within `tolerance` of palette colour k."""
  x = np.asarray(frames, np.float32)                          # [T, H, W, 3]
  # |x - p|^2 = |x|^2 - 2 x.p + |p|^2, one matmul instead of K broadcasts.
  d2 = (x * x).sum(-1)[None] - 2.0 * np.einsum("thwc,kc->kthw", x, _PALETTE) + (
      _PALETTE * _PALETTE).sum(-1)[:, None, None, None]
  return d2 < tolerance * tolerance


def _shape(mask: np.ndarray) -> tuple[str, dict]:
  ys, xs = np.nonzero(mask)
  area = float(ys.size)
  pts = np.stack([xs + 0.5, ys + 0.5], 1)
  centre = pts.mean(0)
  # Pixel squares reach half a pixel beyond their centres.
  r_max = float(np.sqrt(((pts - centre) ** 2).sum(1)).max()) + 0.5
  circularity = area / (np.pi * r_max ** 2)
  corners = (pts[:, None] + np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]])[None]).reshape(
      -1, 2)
  try:
    solidity = area / ConvexHull(corners).volume
  except QhullError:
    solidity = 1.0
  if circularity < 0.5:
    shape = "triangle"
  elif solidity < 0.82:
    shape = "cross"
  elif circularity > 0.8:
    shape = "circle"
  else:
    shape = "square"
  return shape, {"circularity": circularity, "solidity": solidity, "area": area}


def detect(frames: np.ndarray, *, tolerance: float = 70.0, lead: int = 3,
           min_speed_px: float = 0.3) -> dict:
  """frames uint8 [T, H, W, 3] (or float in [0, 1]) -> {colour, shape, direction, ...}.

  Returns colour/shape/direction None when no palette colour covers at least 4 pixels.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"detect: frames must be [T, H, W, 3], got {frames.shape}.")
  if frames.dtype != np.uint8:
    frames = np.clip(np.round(np.asarray(frames, np.float32) * 255), 0, 255)
  masks = _colour_masks(frames, tolerance)                    # [K, T, H, W]
  counts = masks.sum(axis=(1, 2, 3))
  k = int(np.argmax(counts))
  if counts[k] < 4:
    return {"colour": None, "shape": None, "direction": None}
  mask = masks[k]                                              # [T, H, W]
  per_frame = mask.sum(axis=(1, 2))
  shape, stats = _shape(mask[int(np.argmax(per_frame))])
  t = mask.shape[0]
  direction, velocity = "none", (0.0, 0.0)
  if t > 1:
    present = [i for i in range(min(t, lead + 1)) if per_frame[i] > 0]
    if len(present) >= 2:
      cents = []
      for i in (present[0], present[-1]):
        ys, xs = np.nonzero(mask[i])
        cents.append((xs.mean(), ys.mean()))
      steps = present[-1] - present[0]
      vx = (cents[1][0] - cents[0][0]) / steps
      vy = (cents[1][1] - cents[0][1]) / steps
      velocity = (float(vx), float(vy))
      if max(abs(vx), abs(vy)) >= min_speed_px:
        if abs(vx) >= abs(vy):
          direction = "right" if vx > 0 else "left"
        else:
          direction = "down" if vy > 0 else "up"
  return {"colour": _NAMES[k], "shape": shape, "direction": direction,
          "velocity_px_per_frame": velocity, **stats}


def agreement(detected: dict, labels: dict) -> dict[str, bool]:
  """Per-field match of `detect` output against flat labels (`flat_labels`) or a prompt's labels."""
  return {key: detected.get(key) == labels.get(key) for key in ("colour", "shape", "direction")}
