"""Synthetic training audio: tones, chirps, clicks and their mixtures, deterministic by seed.

Clip i of batch b under seed s is a pure function of (s, b, i), so the trainer's data position is
one integer (an `IndexedBatchIterator`) and held-out sets (another seed) never overlap training.
Every clip is peak-normalized to a random level in [0.1, 0.9] (the codec sees waves in [-1, 1], as
at the public API; no further input normalization).
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.iterators import IndexedBatchIterator

KINDS = ("tone", "chirp", "clicks", "mixture")
HELDOUT_SEED = 1_000_003


def _envelope(rng, n, sr):
  attack = rng.uniform(0.002, 0.05) * sr
  t = np.arange(n)
  env = np.minimum(1.0, t / attack) * np.exp(-t / (rng.uniform(0.2, 2.0) * sr))
  return env


def _tone(rng, n, sr):
  t = np.arange(n) / sr
  f0 = np.exp(rng.uniform(np.log(80.0), np.log(2000.0)))
  wave = np.zeros(n)
  for h in range(1, rng.integers(1, 5) + 1):
    if h * f0 < sr / 2:
      wave += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
  return wave * _envelope(rng, n, sr)


def _chirp(rng, n, sr):
  t = np.arange(n) / sr
  f0, f1 = np.exp(rng.uniform(np.log(60.0), np.log(6000.0), 2))
  duration = n / sr
  k = np.log(f1 / f0) / duration
  phase = 2 * np.pi * f0 * (np.expm1(k * t) / k if abs(k) > 1e-6 else t)
  return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _clicks(rng, n, sr):
  wave = np.zeros(n)
  rate = rng.uniform(2.0, 20.0)
  period = int(sr / rate)
  decay = rng.uniform(0.001, 0.01) * sr
  burst_len = int(6 * decay)
  burst = rng.normal(size=burst_len) * np.exp(-np.arange(burst_len) / decay)
  for start in range(int(rng.integers(0, max(period, 1))), n, max(period, 1)):
    end = min(n, start + burst_len)
    wave[start:end] += burst[:end - start]
  return wave


def synthetic_clip(rng: np.random.Generator, num_samples: int, sample_rate: int = 16_000,
                   kind: str | None = None) -> np.ndarray:
  """float32 [num_samples] in [-0.9, 0.9]."""
  kind = kind or KINDS[rng.integers(len(KINDS))]
  makers = {"tone": _tone, "chirp": _chirp, "clicks": _clicks}
  if kind == "mixture":
    wave = sum(makers[k](rng, num_samples, sample_rate) for k in rng.choice(
        ["tone", "chirp", "clicks"], 2, replace=False))
  elif kind in makers:
    wave = makers[kind](rng, num_samples, sample_rate)
  else:
    raise ValueError(f"synthetic_clip: unknown kind {kind!r}; known: {KINDS}.")
  peak = np.max(np.abs(wave))
  gain = rng.uniform(0.1, 0.9)
  return (wave / peak * gain if peak > 0 else wave).astype(np.float32)


def synthetic_batch(seed: int, index: int, batch_size: int, num_samples: int,
                    sample_rate: int = 16_000, rows: slice | None = None) -> np.ndarray:
  """Batch `index` under `seed`: float32 [batch_size, num_samples] (or the given rows of it)."""
  rows = rows or slice(0, batch_size)
  return np.stack([synthetic_clip(np.random.default_rng([seed, index, i]), num_samples,
                                  sample_rate) for i in range(batch_size)[rows]])


def synthetic_batches(batch_size: int, num_samples: int, seed: int = 0, sample_rate: int = 16_000,
                      process_index: int = 0, process_count: int = 1) -> IndexedBatchIterator:
  """{"wave": [batch_size / process_count, num_samples]} batches for the trainer."""
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes.")
  local = batch_size // process_count
  rows = slice(process_index * local, (process_index + 1) * local)
  return IndexedBatchIterator(lambda i: {"wave": synthetic_batch(seed, i, batch_size, num_samples,
                                                                 sample_rate, rows)})
