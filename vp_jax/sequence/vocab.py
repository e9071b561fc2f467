"""The unified vocabulary of the VideoPoet LM (paper 3.1, Table 1).

One id space for every modality the LM reads or writes:

    [0, 256)                       special and task tokens (Table 1, below)
    [256, 256 + V)                 visual codes (MAGVIT-v2 LFQ; V = 2^18 = 262,144 in the paper)
    [256 + V, 256 + V + 4 * A)     audio codes (SoundStream RVQ; 4 levels x A = 1,024, each level
                                   its own range, level 0 first)

Text never becomes ids: T5 embeddings are projected into reserved positions (`TEXT_SLOT`).
Tokenizers return their own codes; `Vocabulary` adds and removes the offsets, refusing ids outside a
modality's range. The paper's sizes are `PAPER`; smaller vocabularies (a CPU-sized tokenizer with
fewer LFQ bits) keep the same layout with other sizes.
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

NUM_SPECIAL = 256


class Special(enum.IntEnum):
  """Special and task tokens. Ids are stable: checkpoints and datasets depend on them."""

  PAD = 0
  BOS = 1          # beginning of sequence
  EOS = 2          # end of the entire sequence
  BOT_I = 3        # beginning / end of the text input
  EOT_I = 4
  BOV_I = 5        # beginning / end of a visual input
  EOV_I = 6
  BOA_I = 7        # beginning / end of the audio input
  EOA_I = 8
  RES = 9          # output resolution 128x224 (portrait, H=224 x W=128); 128x128 when absent
  BOV_O = 10       # beginning / end of the video output
  EOV_O = 11
  BOA_O = 12       # beginning / end of the audio output
  EOA_O = 13
  TEXT_SLOT = 14   # a position whose input is a projected T5 embedding, not an id embedding
  # <task>: one token per output kind (paper 4.1: "a unique token for each unique output").
  TASK_VIDEO = 16
  TASK_AUDIO = 17
  TASK_AUDIO_VIDEO = 18
  # Output format: resolution x length (paper 4.1, "video token format").
  FORMAT_128x128_17 = 32
  FORMAT_128x128_41 = 33
  FORMAT_128x224_17 = 34
  FORMAT_128x224_41 = 35


# (resolution name, frames) -> format token. Resolution names are the paper's; 128x224 is the
# portrait format (height 224, width 128), tokenized to a (T', 28, 16) latent grid.
FORMAT_TOKENS = {
    ("128x128", 17): Special.FORMAT_128x128_17,
    ("128x128", 41): Special.FORMAT_128x128_41,
    ("128x224", 17): Special.FORMAT_128x224_17,
    ("128x224", 41): Special.FORMAT_128x224_41,
}
RESOLUTIONS = {"128x128": (128, 128), "128x224": (224, 128)}  # name -> (height, width)


class VocabularyError(ValueError):
  """Ids or codes outside the range of the modality they claim to be."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """The unified vocabulary's sizes: specials, then 2^18 visual codes, then the audio levels' codes
  (level-major); offsets and conversions between codes and ids."""
  visual_codes: int = 2 ** 18
  audio_levels: int = 4
  audio_codes_per_level: int = 1024

  def __post_init__(self):
    for name in ("visual_codes", "audio_levels", "audio_codes_per_level"):
      if getattr(self, name) < 1:
        raise VocabularyError(f"Vocabulary.{name}={getattr(self, name)} must be >= 1.")

  @property
  def visual_offset(self) -> int:
    return NUM_SPECIAL

  @property
  def audio_offset(self) -> int:
    return NUM_SPECIAL + self.visual_codes

  @property
  def size(self) -> int:
    return self.audio_offset + self.audio_levels * self.audio_codes_per_level

  def visual_range(self) -> tuple[int, int]:
    """[lo, hi) of visual ids."""
    return self.visual_offset, self.visual_offset + self.visual_codes

  def audio_range(self, level: int) -> tuple[int, int]:
    """[lo, hi) of the ids of one RVQ level."""
    if not 0 <= level < self.audio_levels:
      raise VocabularyError(f"audio level {level} outside [0, {self.audio_levels}).")
    lo = self.audio_offset + level * self.audio_codes_per_level
    return lo, lo + self.audio_codes_per_level

  # -- visual ---------------------------------------------------------------------------------
  def visual_to_ids(self, codes) -> np.ndarray:
    """Tokenizer codes in [0, visual_codes) (any shape) -> unified ids (same shape)."""
    codes = _as_int(codes)
    _check(codes, 0, self.visual_codes, "visual codes")
    return codes + self.visual_offset

  def ids_to_visual(self, ids) -> np.ndarray:
    ids = _as_int(ids)
    _check(ids, *self.visual_range(), "visual ids")
    return ids - self.visual_offset

  # -- audio (level-major) --------------------------------------------------------------------
  def audio_to_ids(self, codes) -> np.ndarray:
    """RVQ codes [..., levels, T] in [0, A) -> unified ids [..., levels * T], level-major (all of
    level 0, then level 1, ...), each level shifted into its own range."""
    codes = _as_int(codes)
    if codes.ndim < 2 or codes.shape[-2] != self.audio_levels:
      raise VocabularyError(f"audio codes must be [..., {self.audio_levels}, T], got shape "
                            f"{codes.shape}.")
    _check(codes, 0, self.audio_codes_per_level, "audio codes")
    level_offset = self.audio_offset + self.audio_codes_per_level * np.arange(self.audio_levels)
    ids = codes + level_offset[:, None].astype(codes.dtype)
    return ids.reshape(codes.shape[:-2] + (-1,))

  def ids_to_audio(self, ids) -> np.ndarray:
    """Inverse of `audio_to_ids`: [..., levels * T] -> codes [..., levels, T]; every id must lie in
    the range of the level its position belongs to."""
    ids = _as_int(ids)
    if ids.shape[-1] % self.audio_levels:
      raise VocabularyError(f"{ids.shape[-1]} audio ids is not a multiple of "
                            f"{self.audio_levels} levels.")
    grid = ids.reshape(ids.shape[:-1] + (self.audio_levels, -1))
    for level in range(self.audio_levels):
      _check(grid[..., level, :], *self.audio_range(level), f"audio ids of level {level}")
    level_offset = self.audio_offset + self.audio_codes_per_level * np.arange(self.audio_levels)
    return grid - level_offset[:, None].astype(grid.dtype)

  def modality_of(self, ids) -> np.ndarray:
    """Per id: 0 special, 1 visual, 2 + level audio; -1 outside the vocabulary."""
    ids = _as_int(ids)
    out = np.full(ids.shape, -1, np.int32)
    out[(ids >= 0) & (ids < NUM_SPECIAL)] = 0
    lo, hi = self.visual_range()
    out[(ids >= lo) & (ids < hi)] = 1
    for level in range(self.audio_levels):
      lo, hi = self.audio_range(level)
      out[(ids >= lo) & (ids < hi)] = 2 + level
    return out


PAPER = Vocabulary()  # 256 + 262,144 + 4,096 = 266,496 ids


def _as_int(x) -> np.ndarray:
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.integer):
    raise VocabularyError(f"token arrays must be integers, got dtype {x.dtype}.")
  return x.astype(np.int64) if x.dtype.itemsize > 4 else x.astype(np.int32)


def _check(x: np.ndarray, lo: int, hi: int, what: str) -> None:
  if x.size and (x.min() < lo or x.max() >= hi):
    bad = x[(x < lo) | (x >= hi)]
    raise VocabularyError(f"{what} must lie in [{lo}, {hi}); got {bad.size} outside, e.g. "
                          f"{int(bad.flat[0])}.")
