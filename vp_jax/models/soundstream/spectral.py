"""STFTs and mel spectrograms in JAX, for the reconstruction loss, the STFT discriminator and the
held-out quality metric.

Frames are cut with a hop of n_fft / 4 by reshaping (no gather), the signal zero-padded at the end
to whole hops; Hann window normalized to unit sum (a sine of amplitude A has magnitude A / 2);
mel filters are HTK-scale triangles (numpy constants). The multi-scale spectral loss is
SoundStream's eq. (5): for window s in 2^6 .. 2^11,
  sum_t ||S_t(x) - S_t(x_hat)||_1 + sqrt(s / 2) * sum_t ||log S_t(x) - log S_t(x_hat)||_2,
here averaged (not summed) over frames and batch.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

OVERLAP = 4   # hop = n_fft // OVERLAP


def frames(x: jax.Array, n_fft: int) -> jax.Array:
  """[B, N] -> [B, F, n_fft] frames with hop n_fft // 4 (end zero-padded)."""
  hop = n_fft // OVERLAP
  b, n = x.shape
  num = max(-(-n // hop), 1)
  x = jnp.pad(x, ((0, 0), (0, num * hop + n_fft - hop - n)))
  blocks = x.reshape(b, num + OVERLAP - 1, hop)
  return jnp.concatenate([blocks[:, i:i + num] for i in range(OVERLAP)], axis=-1)


@functools.lru_cache(maxsize=None)
def _hann(n: int) -> np.ndarray:
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft(x: jax.Array, n_fft: int) -> jax.Array:
  """[B, N] -> complex64 [B, F, n_fft // 2 + 1], divided by the window sum so that a sine of
  amplitude A peaks at A / 2 at every window size (keeps the loss scales comparable)."""
  window = _hann(n_fft)
  return jnp.fft.rfft(frames(x, n_fft) * (window / window.sum()), axis=-1)


def _hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_filters(n_fft: int, num_mels: int, sample_rate: int) -> np.ndarray:
  """[n_fft // 2 + 1, num_mels] HTK triangular filters from 0 Hz to Nyquist (peak 1)."""
  bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  edges = _mel_to_hz(np.linspace(0, _hz_to_mel(sample_rate / 2), num_mels + 2))
  lo, mid, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
  f = bins[:, None]
  up = (f - lo) / np.maximum(mid - lo, 1e-9)
  down = (hi - f) / np.maximum(hi - mid, 1e-9)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def num_mels_for(n_fft: int, num_mels: int) -> int:
  """Short windows have few frequency bins: at most n_fft // 4 mel bands (64 -> 16, 128 -> 32)."""
  return min(num_mels, n_fft // 4)


def mel_spectrogram(x: jax.Array, n_fft: int, num_mels: int, sample_rate: int) -> jax.Array:
  """[B, N] -> magnitude mel spectrogram [B, F, M]."""
  mels = num_mels_for(n_fft, num_mels)
  return jnp.abs(stft(x, n_fft)) @ mel_filters(n_fft, mels, sample_rate)


def multiscale_mel_loss(x: jax.Array, y: jax.Array, windows, num_mels: int,
                        sample_rate: int) -> jax.Array:
  """SoundStream eq. (5) between [B, N] waves, mean over scales."""
  total = 0.0
  for s in windows:
    mx = mel_spectrogram(x, s, num_mels, sample_rate)
    my = mel_spectrogram(y, s, num_mels, sample_rate)
    l1 = jnp.mean(jnp.sum(jnp.abs(mx - my), -1))
    diff = jnp.log(mx + 1e-5) - jnp.log(my + 1e-5)
    l2 = jnp.mean(jnp.sqrt(jnp.sum(diff * diff, -1) + 1e-8))
    total = total + l1 + jnp.sqrt(s / 2.0) * l2
  return total / len(windows)


def log_mel_distance(x: jax.Array, y: jax.Array, sample_rate: int = 16_000, n_fft: int = 1024,
                     num_mels: int = 64) -> jax.Array:
  """The quality metric: mean |log10 mel(x) - log10 mel(y)| (per example [B]), 1024-point window;
  a floor of 1e-4 keeps silence from dominating."""
  mx = mel_spectrogram(x, n_fft, num_mels, sample_rate)
  my = mel_spectrogram(y, n_fft, num_mels, sample_rate)
  return jnp.mean(jnp.abs(jnp.log10(mx + 1e-4) - jnp.log10(my + 1e-4)), axis=(1, 2))


def snr_db(reference: jax.Array, estimate: jax.Array) -> jax.Array:
  """Per-example signal-to-noise ratio in dB: 10 log10(|x|^2 / |x - x_hat|^2), [B]."""
  signal = jnp.sum(reference ** 2, -1)
  noise = jnp.sum((reference - estimate) ** 2, -1)
  return 10.0 * jnp.log10((signal + 1e-12) / (noise + 1e-12))
