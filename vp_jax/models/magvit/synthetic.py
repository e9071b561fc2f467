"""Deterministic moving-shape clips for training and testing the tokenizer before real data exists.

Each clip: a smooth two-colour vertical gradient background and 1-3 filled shapes (rectangles and
discs) of random colours moving with constant velocity and bouncing off the borders. Clip `i` of a
stream is a pure function of (seed, i), so a batch iterator's position is one integer and held-out
clips are a disjoint seed. `frames=1` gives images (for image pretraining).
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.iterators import IndexedBatchIterator


def moving_shapes_clip(rng: np.random.Generator, frames: int, height: int, width: int
                       ) -> np.ndarray:
  """uint8 [frames, height, width, 3]."""
  top, bottom = rng.uniform(0, 255, (2, 3))
  ramp = np.linspace(0.0, 1.0, height)[:, None, None]
  background = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))   # [H, W, 3]
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  clip = np.repeat(background[None], frames, axis=0)
  for _ in range(rng.integers(1, 4)):
    color = rng.uniform(0, 255, 3)
    size = rng.uniform(0.12, 0.3) * min(height, width)
    pos = rng.uniform([0, 0], [height - size, width - size])
    vel = rng.uniform(-0.06, 0.06, 2) * np.array([height, width])
    disc = rng.random() < 0.5
    for t in range(frames):
      p = pos + vel * t
      span = np.array([height - size, width - size])
      p = np.abs((p + span) % (2 * span) - span)          # bounce off the borders
      if disc:
        r = size / 2
        mask = (yy - p[0] - r) ** 2 + (xx - p[1] - r) ** 2 <= r * r
      else:
        mask = (yy >= p[0]) & (yy < p[0] + size) & (xx >= p[1]) & (xx < p[1] + size)
      clip[t][mask] = color
  return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def moving_shapes_batch(seed: int, index: int, batch_size: int, frames: int, height: int,
                        width: int) -> np.ndarray:
  """uint8 [batch_size, frames, height, width, 3]: batch `index` of stream `seed`."""
  rng = np.random.default_rng([seed, index])
  return np.stack([moving_shapes_clip(rng, frames, height, width) for _ in range(batch_size)])


def moving_shapes_iterator(batch_size: int, frames: int, height: int, width: int, seed: int = 0,
                           process_index: int = 0, process_count: int = 1
                           ) -> IndexedBatchIterator:
  """Checkpointable iterator of {"video": uint8 [B/processes, T, H, W, 3]} batches."""
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes.")
  local = batch_size // process_count

  def make(index: int):
    clips = moving_shapes_batch(seed, index, batch_size, frames, height, width)
    return {"video": clips[process_index * local:(process_index + 1) * local]}

  return IndexedBatchIterator(make)
