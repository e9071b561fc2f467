"""Synthetic scenes: the vocabulary of labels and a seeded sampler that turns labels into motion.

A scene is a background (colour, pattern, camera pan) plus objects (shape, colour, size, a start
position, a velocity, a spin). Geometry is in *units* of `min(H, W)` pixels, so the same seed gives the
same scene at 128x128 and at 32x32 (the portrait frame is 1 x 1.75 units). Objects move in screen
space and reflect off the frame edges; the labels are derived from the actual trajectory (the number
of bounces is counted, not wished for), so captions built from them are always true.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
# Object colours (bright) and their names; pitch of the soundtrack follows this order.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "orange": (245, 140, 30), "yellow": (240, 220, 40),
    "green": (40, 190, 60), "cyan": (40, 210, 220), "blue": (40, 80, 235),
    "purple": (150, 60, 200), "white": (245, 245, 245),
}
# Background colours (muted, none close to an object colour).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15), "gray": (110, 110, 110), "navy": (20, 30, 80),
    "dark green": (20, 70, 35), "brown": (90, 55, 30), "maroon": (90, 20, 35),
}
PATTERNS = ("plain", "checker", "stripes")
SIZES: dict[str, float] = {"small": 0.10, "medium": 0.15, "large": 0.21}  # radius in units
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS: dict[str, float] = {"slow": 0.15, "fast": 0.3}  # units per second
ROTATIONS: dict[str, float] = {"none": 0.0, "clockwise": 1.0, "counterclockwise": -1.0}
SPIN_DEG_PER_S = 90.0
CAMERA_SPEED = 0.12  # units per second
CAMERAS = ("none", "left", "right", "up", "down")


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """What the sampler may choose (all probabilities per example)."""
  max_objects: int = 1
  p_still: float = 0.1         # object does not move (direction label "none")
  p_bounce: float = 0.35       # aim for a bounce within the clip (forced when unavoidable)
  p_rotate: float = 0.4        # non-circles spin
  p_camera: float = 0.25       # camera pans (the background moves the other way)
  p_pattern: float = 0.6       # textured background (always when the camera moves)


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  shape: str
  colour: str
  size: str
  direction: str            # left | right | up | down | none
  speed: str                # slow | fast | none
  rotation: str             # none | clockwise | counterclockwise
  start: tuple[float, float]  # (x, y) centre at frame 0, units
  velocity: tuple[float, float]  # units per second
  angle0: float             # degrees at frame 0

  @property
  def radius(self) -> float:
    return SIZES[self.size]

  @property
  def spin(self) -> float:  # degrees per second (screen: y down, so positive = clockwise)
    return ROTATIONS[self.rotation] * SPIN_DEG_PER_S


@dataclasses.dataclass(frozen=True)
class Scene:
  extent: tuple[float, float]   # (width, height) in units
  background: str
  pattern: str
  pattern_phase: tuple[float, float]
  camera: str
  objects: tuple[ObjectSpec, ...]  # back to front (layer order)

  @property
  def camera_velocity(self) -> tuple[float, float]:
    if self.camera == "none":
      return (0.0, 0.0)
    dx, dy = DIRECTIONS[self.camera]
    return (dx * CAMERA_SPEED, dy * CAMERA_SPEED)


def _pick(rng: np.random.Generator, options):
  options = list(options)
  return options[int(rng.integers(len(options)))]


def _axis_range(radius: float, extent: float) -> tuple[float, float]:
  return radius, extent - radius


def _sample_start(rng, lo, hi, v, duration, want_bounce):
  """Start coordinate along the motion axis: a bounce at 25-75% of the clip, or none at all."""
  span = hi - lo
  travel = abs(v) * duration
  if want_bounce or travel >= span:
    t_hit = duration * rng.uniform(0.25, 0.75)
    dist = min(abs(v) * t_hit, span)
    return hi - dist if v > 0 else lo + dist
  slack = span - travel
  offset = rng.uniform(0.0, slack)
  return lo + offset if v > 0 else hi - offset


def sample_scene(rng: np.random.Generator, config: SceneConfig, *, height: int, width: int,
                 duration_s: float, still: bool = False) -> Scene:
  """Draws one scene; `still=True` for images (no motion, no camera)."""
  unit = min(height, width)
  extent = (width / unit, height / unit)
  n = int(rng.integers(1, config.max_objects + 1))
  colours = list(rng.permutation(list(COLOURS)))
  objects = []
  for k in range(n):
    shape = _pick(rng, SHAPES)
    size = _pick(rng, SIZES)
    radius = SIZES[size]
    moving = (not still) and rng.uniform() >= config.p_still
    rotation = "none"
    if not still and shape != "circle" and rng.uniform() < config.p_rotate:
      rotation = _pick(rng, ("clockwise", "counterclockwise"))
    xlo, xhi = _axis_range(radius, extent[0])
    ylo, yhi = _axis_range(radius, extent[1])
    start = [rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)]
    if moving:
      direction = _pick(rng, DIRECTIONS)
      speed = _pick(rng, SPEEDS)
      dx, dy = DIRECTIONS[direction]
      v = (dx * SPEEDS[speed], dy * SPEEDS[speed])
      axis = 0 if dx else 1
      lo, hi = (xlo, xhi) if axis == 0 else (ylo, yhi)
      start[axis] = _sample_start(rng, lo, hi, v[axis], duration_s,
                                  rng.uniform() < config.p_bounce)
    else:
      direction, speed, v = "none", "none", (0.0, 0.0)
    objects.append(ObjectSpec(shape=shape, colour=str(colours[k]), size=size, direction=direction,
                              speed=speed, rotation=rotation, start=(start[0], start[1]),
                              velocity=v, angle0=float(rng.uniform(0, 90)) if shape != "circle"
                              else 0.0))
  camera = "none"
  if not still and rng.uniform() < config.p_camera:
    camera = _pick(rng, CAMERAS[1:])
  pattern = "plain"
  if camera != "none" or rng.uniform() < config.p_pattern:
    pattern = _pick(rng, PATTERNS[1:])
  return Scene(extent=extent, background=_pick(rng, BACKGROUNDS), pattern=pattern,
               pattern_phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))), camera=camera,
               objects=tuple(objects))


def reflect(p: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
  """Position on the unbounded line -> (position reflected into [lo, hi], bounce count so far)."""
  span = hi - lo
  u = np.asarray(p, np.float64) - lo
  count = np.floor(u / span)
  m = np.mod(u, 2 * span)
  pos = lo + np.where(m <= span, m, 2 * span - m)
  return pos, np.abs(count).astype(np.int64)


def object_state(obj: ObjectSpec, scene: Scene, t: np.ndarray):
  """Centre (x, y) [..., 2] in units, angle in degrees, bounce count, at times t (seconds)."""
  t = np.asarray(t, np.float64)
  centre, bounces = [], 0
  for axis in range(2):
    lo, hi = _axis_range(obj.radius, scene.extent[axis])
    raw = obj.start[axis] + obj.velocity[axis] * t
    pos, count = reflect(raw, lo, hi) if obj.velocity[axis] else (raw + 0 * t, 0 * t)
    centre.append(pos)
    bounces = bounces + count
  angle = obj.angle0 + obj.spin * t
  return np.stack(centre, -1), angle, np.asarray(bounces, np.int64)


def bounce_times(obj: ObjectSpec, scene: Scene, duration_s: float) -> list[float]:
  """Exact times (seconds, within [0, duration)) at which the object hits a frame edge."""
  times = []
  for axis in range(2):
    v = obj.velocity[axis]
    if not v:
      continue
    lo, hi = _axis_range(obj.radius, scene.extent[axis])
    span = hi - lo
    u0 = obj.start[axis] - lo
    # Crossings of u0 + v t through multiples of span (k != the starting cell boundary).
    u1 = u0 + v * duration_s
    first, last = sorted((u0, u1))
    k = np.floor(first / span) + 1
    while k * span <= last:
      t = (k * span - u0) / v
      if 0 < t < duration_s:
        times.append(float(t))
      k += 1
  return sorted(times)
