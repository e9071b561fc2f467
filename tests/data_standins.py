"""TEST STAND-INS for the video tokenizer, audio tokenizer and text encoder (tests/benchmarks only).

The real ones (MAGVIT-v2, SoundStream, T5) are built in other issues. These implement the encode side
of the documented interfaces (docs/interfaces.md) deterministically, with the right shapes and code
ranges, so the tokenization job can be tested against the contract:

- StandInVideoTokenizer: causal patches (first frame alone, then 4-frame chunks) x 8x8 pixels,
  a fixed random projection to 18 dims, the sign bits -> a code in [0, 2^18) (a lookup-free
  quantizer). commit_encode tokenizes the masked video as the condition and the full video as the
  target.
- StandInAudioTokenizer: 320-sample frames (34,000 samples -> 106), 4 levels of 10-bit projections of
  the frame and its residual-like transforms -> codes in [0, 1024).
- StandInTextEncoder: per-word embeddings from a hash, up to 64 tokens + mask + truncation count.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _to_unit(frames) -> np.ndarray:
  x = np.asarray(frames)
  return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


class StandInVideoTokenizer:
  BITS = 18

  def __init__(self, seed: int = 0):
    rng = np.random.default_rng(seed)
    self._first = rng.normal(size=(8 * 8 * 3, self.BITS)).astype(np.float32)
    self._chunk = rng.normal(size=(4 * 8 * 8 * 3, self.BITS)).astype(np.float32)
    self._weights = (2 ** np.arange(self.BITS)).astype(np.int64)
    self.calls = 0

  def describe(self):
    return {"class": "tests.data_standins.StandInVideoTokenizer", "version": "standin-1",
            "checkpoint": None}

  def latent_shape(self, t, h, w):
    return (1 + (t - 1) // 4, h // 8, w // 8)

  def _quantize(self, patches, proj):
    bits = (patches @ proj) > 0
    return (bits.astype(np.int64) * self._weights).sum(-1).astype(np.int32)

  def encode(self, frames) -> np.ndarray:
    self.calls += 1
    x = _to_unit(frames) - 0.5                                      # [B, T, H, W, 3]
    b, t, h, w, c = x.shape
    if (t - 1) % 4 or h % 8 or w % 8:
      raise ValueError(f"stand-in video tokenizer: bad frames shape {x.shape}")
    gh, gw = h // 8, w // 8
    first = x[:, 0].reshape(b, gh, 8, gw, 8, c).transpose(0, 1, 3, 2, 4, 5)
    out = [self._quantize(first.reshape(b, gh, gw, -1), self._first)[:, None]]
    if t > 1:
      rest = x[:, 1:].reshape(b, (t - 1) // 4, 4, gh, 8, gw, 8, c)
      rest = rest.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, (t - 1) // 4, gh, gw, -1)
      out.append(self._quantize(rest, self._chunk))
    return np.concatenate(out, axis=1)                              # [B, T', H', W']

  def commit_encode(self, frames, visible):
    x = _to_unit(frames)
    masked = x * np.asarray(visible, np.float32)[..., None]
    return self.encode(masked), self.encode(x)


class CrashingVideoTokenizer(StandInVideoTokenizer):
  """Raises on the n-th encode call: a job killed in the middle of a shard."""

  def __init__(self, crash_at_call: int, seed: int = 0):
    super().__init__(seed)
    self.crash_at_call = crash_at_call

  def encode(self, frames):
    if self.calls + 1 >= self.crash_at_call:
      raise KeyboardInterrupt("simulated kill")
    return super().encode(frames)


class StandInAudioTokenizer:
  HOP = 320
  LEVELS = 4

  def __init__(self, seed: int = 1):
    rng = np.random.default_rng(seed)
    self._proj = rng.normal(size=(self.LEVELS, self.HOP, 10)).astype(np.float32)
    self._weights = (2 ** np.arange(10)).astype(np.int64)

  def describe(self):
    return {"class": "tests.data_standins.StandInAudioTokenizer", "version": "standin-1",
            "checkpoint": None}

  def num_frames(self, num_samples):
    return num_samples // self.HOP

  def encode(self, wave) -> np.ndarray:
    w = np.asarray(wave, np.float32)
    b, n = w.shape
    t = self.num_frames(n)
    frames = w[:, :t * self.HOP].reshape(b, t, self.HOP)
    codes = []
    for level in range(self.LEVELS):
      bits = (frames @ self._proj[level]) > 0
      codes.append((bits.astype(np.int64) * self._weights).sum(-1))
    return np.stack(codes, axis=1).astype(np.int32)               # [B, 4, T]


class _Embeddings:
  def __init__(self, embeddings, mask, num_truncated):
    self.embeddings, self.mask, self.num_truncated = embeddings, mask, num_truncated


class StandInTextEncoder:
  MAX_LEN = 64

  def __init__(self, dim: int = 16):
    self.dim = dim

  def describe(self):
    return {"class": "tests.data_standins.StandInTextEncoder", "version": "standin-1",
            "model_id": f"hash-{self.dim}"}

  def _word(self, word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)

  def encode(self, texts):
    b = len(texts)
    emb = np.zeros((b, self.MAX_LEN, self.dim), np.float32)
    mask = np.zeros((b, self.MAX_LEN), bool)
    trunc = np.zeros((b,), np.int32)
    for i, text in enumerate(texts):
      words = text.split()
      trunc[i] = max(0, len(words) - self.MAX_LEN)
      for j, word in enumerate(words[:self.MAX_LEN]):
        emb[i, j] = self._word(word)
        mask[i, j] = True
    return _Embeddings(emb, mask, trunc)


def standin_tokenizers(video=None):
  from vp_jax.data.tokenize.features import Tokenizers
  return Tokenizers(video=video or StandInVideoTokenizer(), audio=StandInAudioTokenizer(),
                    text=StandInTextEncoder())
