"""Rasterizes a synthetic scene into RGB frames, per-frame depth and the true forward optical flow.

Everything is analytic, so depth and flow are exact rather than estimated: each pixel belongs to the
front-most layer that covers it (background, then objects back to front); depth is a MiDaS-style
normalized inverse depth (1 = nearest: objects by layer; the background is a ground-like ramp, lower
rows nearer); flow[t] is where the point seen at pixel x in frame t is in frame t + 1 (in pixels,
(dx, dy)), computed from the rigid motion of its layer — translation with reflections at the frame
edges plus spin for objects, the opposite of the camera pan for the background. The last frame's flow
uses the analytic position at t = T, so every frame has a flow field. Edges are hard (no
anti-aliasing), which keeps the warp check frame[t](x) == frame[t+1](x + flow) exact.
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.synthetic.scene import BACKGROUNDS, COLOURS, Scene, object_state

BACKGROUND_DEPTH = (0.0, 0.3)   # top row, bottom row
OBJECT_DEPTH = (0.6, 1.0)       # back-most object, front-most object


def _inside(shape: str, qx: np.ndarray, qy: np.ndarray, r: float) -> np.ndarray:
  """Object-local coordinates (units, y down) -> bool mask of the shape of radius r."""
  if shape == "circle":
    return qx * qx + qy * qy <= r * r
  if shape == "square":
    s = r * 0.8
    return (np.abs(qx) <= s) & (np.abs(qy) <= s)
  if shape == "triangle":  # equilateral, apex up, circumradius r
    return (qy <= r / 2) & (np.sqrt(3.0) * qx - qy <= r) & (-np.sqrt(3.0) * qx - qy <= r)
  if shape == "cross":
    a, b = np.abs(qx), np.abs(qy)
    return ((a <= r / 3) & (b <= r)) | ((b <= r / 3) & (a <= r))
  raise ValueError(f"unknown shape {shape!r}")


def _rotate(x, y, degrees):
  th = np.deg2rad(degrees)
  c, s = np.cos(th), np.sin(th)
  return c * x - s * y, s * x + c * y


def _background(scene: Scene, gx: np.ndarray, gy: np.ndarray, t: float) -> np.ndarray:
  """Background colour [H, W, 3] float at time t; the pattern is fixed in world coordinates."""
  base = np.asarray(BACKGROUNDS[scene.background], np.float32)
  cvx, cvy = scene.camera_velocity
  wx = gx + cvx * t + scene.pattern_phase[0]
  wy = gy + cvy * t + scene.pattern_phase[1]
  cell = 0.125
  if scene.pattern == "checker":
    p = ((np.floor(wx / cell) + np.floor(wy / cell)) % 2) * 2 - 1
  elif scene.pattern == "stripes":
    p = (np.floor((wx + wy) / cell) % 2) * 2 - 1
  else:
    p = np.zeros_like(gx)
  return np.clip(base[None, None] + 40.0 * p[..., None], 0, 255)


def render(scene: Scene, num_frames: int, height: int, width: int, fps: float = 8.0):
  """-> frames uint8 [T, H, W, 3], depth float32 [T, H, W], flow float32 [T, H, W, 2]."""
  unit = float(min(height, width))
  # Pixel centres in units.
  gy, gx = np.meshgrid((np.arange(height) + 0.5) / unit, (np.arange(width) + 0.5) / unit,
                       indexing="ij")
  times = np.arange(num_frames + 1) / fps
  states = [object_state(obj, scene, times) for obj in scene.objects]
  bg_depth = np.broadcast_to(
      np.linspace(BACKGROUND_DEPTH[0], BACKGROUND_DEPTH[1], height, dtype=np.float32)[:, None],
      (height, width))
  n = len(scene.objects)
  obj_depths = [OBJECT_DEPTH[1] if n == 1 else
                OBJECT_DEPTH[0] + (OBJECT_DEPTH[1] - OBJECT_DEPTH[0]) * k / (n - 1)
                for k in range(n)]
  cvx, cvy = scene.camera_velocity
  bg_flow = np.array([-cvx, -cvy], np.float32) * unit / fps

  frames = np.empty((num_frames, height, width, 3), np.uint8)
  depth = np.empty((num_frames, height, width), np.float32)
  flow = np.empty((num_frames, height, width, 2), np.float32)
  for t in range(num_frames):
    rgb = _background(scene, gx, gy, times[t])
    d = bg_depth.copy()
    f = np.broadcast_to(bg_flow, (height, width, 2)).copy()
    for k, obj in enumerate(scene.objects):
      centre, angle, _ = states[k]
      (cx, cy), (nx, ny) = centre[t], centre[t + 1]
      qx, qy = _rotate(gx - cx, gy - cy, -angle[t])       # object-local coordinates
      mask = _inside(obj.shape, qx, qy, obj.radius)
      rgb[mask] = COLOURS[obj.colour]
      d[mask] = obj_depths[k]
      px, py = _rotate(qx, qy, angle[t + 1])              # same point at t + 1
      f[mask, 0] = ((nx + px - gx) * unit)[mask]
      f[mask, 1] = ((ny + py - gy) * unit)[mask]
    frames[t] = np.round(rgb).astype(np.uint8)
    depth[t] = d
    flow[t] = f
  return frames, depth, flow


def object_masks(scene: Scene, num_frames: int, height: int, width: int, fps: float = 8.0):
  """Visible-pixel masks per object: bool [num_objects, T, H, W] (occlusion by later layers)."""
  unit = float(min(height, width))
  gy, gx = np.meshgrid((np.arange(height) + 0.5) / unit, (np.arange(width) + 0.5) / unit,
                       indexing="ij")
  times = np.arange(num_frames) / fps
  masks = np.zeros((len(scene.objects), num_frames, height, width), bool)
  for k, obj in enumerate(scene.objects):
    centre, angle, _ = object_state(obj, scene, times)
    for t in range(num_frames):
      qx, qy = _rotate(gx - centre[t, 0], gy - centre[t, 1], -angle[t])
      masks[k, t] = _inside(obj.shape, qx, qy, obj.radius)
  for k in range(len(scene.objects) - 1):
    masks[k] &= ~masks[k + 1:].any(0)
  return masks

