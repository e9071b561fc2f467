"""SentencePiece tokenization for the T5 encoder: <= 64 tokens, truncation reported, padding mask.

T5's conventions (seqio / HF T5Tokenizer): pad id 0, EOS id 1 appended to every text, no BOS. A
text longer than the limit keeps its first `max_length - 1` pieces followed by EOS (seqio's
`append_eos_after_trim`, HF's `truncation=True`), and `num_truncated` says how many pieces were
dropped, so callers can log or reject long captions instead of losing words silently.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np
import sentencepiece as spm

from vp_jax.text.config import MAX_TEXT_TOKENS

PAD_ID = 0
EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class TokenizedText:
  """A batch of texts as T5 ids, padded to a fixed length (what `Tokenizer.encode` returns)."""
  ids: np.ndarray            # int32 [B, L], PAD_ID after the EOS
  mask: np.ndarray           # bool  [B, L], True = real token (pieces and EOS)
  num_truncated: np.ndarray  # int32 [B], pieces dropped to fit L (0 = the whole text is there)

  def __post_init__(self):
    ids, mask, truncated = (np.asarray(self.ids), np.asarray(self.mask),
                            np.asarray(self.num_truncated))
    if ids.ndim != 2 or mask.shape != ids.shape or truncated.shape != ids.shape[:1]:
      raise ValueError(f"TokenizedText: ids {ids.shape}, mask {mask.shape} and num_truncated "
                       f"{truncated.shape} must be [B, L], [B, L] and [B].")
    if not np.issubdtype(ids.dtype, np.integer) or mask.dtype != np.bool_:
      raise ValueError(f"TokenizedText: ids must be integer and mask bool, got {ids.dtype} and "
                       f"{mask.dtype}.")


class Tokenizer:
  """A SentencePiece model with T5's special ids (pad 0, eos 1, unk 2)."""

  def __init__(self, model_proto: bytes, *, max_length: int = MAX_TEXT_TOKENS,
               source: str = "<bytes>"):
    if max_length < 2:
      raise ValueError(f"Tokenizer: max_length must be >= 2 (a piece and EOS), got {max_length}.")
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(self._proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(f"{source}: not a SentencePiece model ({e}).") from e
    if self._sp.pad_id() != PAD_ID or self._sp.eos_id() != EOS_ID:
      raise ValueError(f"{source}: SentencePiece model has pad id {self._sp.pad_id()} and eos id "
                       f"{self._sp.eos_id()}; T5 expects pad={PAD_ID}, eos={EOS_ID}.")
    self.max_length = max_length
    self.source = source

  @classmethod
  def load(cls, path: str | os.PathLike, *, max_length: int = MAX_TEXT_TOKENS) -> "Tokenizer":
    """Loads a `spiece.model` file (or the file of that name inside a directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, "spiece.model")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no SentencePiece model.")
    with open(path, "rb") as f:
      return cls(f.read(), max_length=max_length, source=path)

  @property
  def vocab_size(self) -> int:
    """Pieces in the SentencePiece model (T5 checkpoints pad their embedding beyond this)."""
    return self._sp.get_piece_size()

  @property
  def fingerprint(self) -> str:
    """sha256 of the serialized model: identifies the vocabulary in cache keys."""
    return hashlib.sha256(self._proto).hexdigest()

  def save(self, path: str | os.PathLike) -> None:
    """Writes the model proto (atomically) to `path`."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(self._proto)
    os.replace(tmp, path)

  def pieces(self, text: str) -> list[int]:
    """Piece ids of `text` without EOS or truncation."""
    if not isinstance(text, str):
      raise TypeError(f"Tokenizer: texts must be str, got {type(text).__name__}: {text!r}.")
    return list(self._sp.encode(text, out_type=int))

  def encode(self, texts: Sequence[str]) -> TokenizedText:
    """Pads/truncates each text to `max_length` ids ending in EOS."""
    if isinstance(texts, str):
      raise TypeError("Tokenizer.encode: texts must be a sequence of str, got a single str.")
    n, length = len(texts), self.max_length
    ids = np.full((n, length), PAD_ID, np.int32)
    truncated = np.zeros((n,), np.int32)
    lengths = np.zeros((n, 1), np.int32)
    for row, text in enumerate(texts):
      pieces = self.pieces(text)
      keep = pieces[:length - 1]
      truncated[row] = len(pieces) - len(keep)
      ids[row, :len(keep) + 1] = keep + [EOS_ID]
      lengths[row] = len(keep) + 1
    mask = np.arange(length)[None, :] < lengths
    return TokenizedText(ids=ids, mask=mask, num_truncated=truncated)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids up to the first EOS (pads and EOS dropped)."""
    out = []
    for i in ids:
      if int(i) == EOS_ID:
        break
      if int(i) != PAD_ID:
        out.append(int(i))
    return self._sp.decode(out)
