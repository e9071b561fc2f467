"""Soundtracks tied to what happens on screen, at 16 kHz mono.

Each object hums at a pitch set by its colour (one note of an A-minor-ish scale per colour, with a
second harmonic), louder when larger, with a tremolo at the spin rate when it spins; each bounce adds a
click (a 15 ms decaying noise burst) at the exact time of the impact. A video-to-audio model can only
get the pitch right by seeing the colour and the clicks right by seeing the bounces, which is what
makes the synthetic set useful for that task.
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.synthetic.scene import COLOURS

# Colour -> fundamental (Hz), in COLOURS order.
PITCH_HZ: dict[str, float] = dict(zip(COLOURS, (220.0, 246.9, 261.6, 293.7, 329.6, 349.2, 392.0,
                                                440.0)))
LOUDNESS = {"small": 0.12, "medium": 0.18, "large": 0.25}
CLICK_S = 0.015
CLICK_GAIN = 0.6


def soundtrack(labels: dict, num_samples: int, sample_rate: int,
               rng: np.random.Generator) -> np.ndarray:
  """-> float32 [num_samples] in [-1, 1]."""
  t = np.arange(num_samples) / sample_rate
  wave = np.zeros(num_samples, np.float64)
  fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fade in/out: no edge clicks
  for obj in labels["objects"]:
    f0 = PITCH_HZ[obj["colour"]]
    tone = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t)
    if obj["rotation"] != "none":
      tone *= 0.75 + 0.25 * np.sin(2 * np.pi * 2.0 * t)  # 90 deg/s spin -> 4 quarter turns / 2 s
    wave += LOUDNESS[obj["size"]] * tone * fade
    for bt in obj["bounce_times_s"]:
      start = int(round(bt * sample_rate))
      n = min(int(CLICK_S * sample_rate), num_samples - start)
      if n <= 0:
        continue
      env = np.exp(-np.arange(n) / (0.003 * sample_rate))
      wave[start:start + n] += CLICK_GAIN * env * rng.uniform(-1, 1, n)
  return np.clip(wave, -1.0, 1.0).astype(np.float32)
