"""EmbeddingCache: text embeddings on disk, keyed by encoder model id and caption text.

Used by the offline tokenization job (each distinct caption encoded once across runs) and at
generation time (a prompt encoded once). One small `.npz` per (model, text) under
`directory/<model>/<2 hex>/<sha256>.npz`, written atomically (temporary file + rename), so a crash
or a concurrent writer never leaves a torn entry. Only the real-token rows are stored; padded rows
are exactly 0 in `TextEncoder` output, so a hit is rebuilt bit-identical to what was computed. A
file that cannot be read, or that belongs to another text or model (hash collision, corruption), is
recomputed and rewritten.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from vp_jax.text.encoder import TextEmbeddings

log = logging.getLogger(__name__)


class EmbeddingCache:
  """On-disk cache of `TextEncoder.encode` results for one encoder (`model_id`)."""

  def __init__(self, directory: str | os.PathLike, model_id: str):
    if not model_id or not isinstance(model_id, str):
      raise ValueError(f"EmbeddingCache: model_id must be a non-empty str, got {model_id!r}.")
    self.model_id = model_id
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:80]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
    self.directory = os.path.join(os.path.abspath(os.fspath(directory)), f"{safe}-{digest}")
    os.makedirs(self.directory, exist_ok=True)
    self.hits = 0
    self.misses = 0

  def _path(self, text: str) -> str:
    key = hashlib.sha256(self.model_id.encode() + b"\0" + text.encode()).hexdigest()
    return os.path.join(self.directory, key[:2], key + ".npz")

  def get(self, text: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(embeddings [L, D], mask [L], num_truncated) of a cached text, or None."""
    path = self._path(text)
    if not os.path.exists(path):
      return None
    try:
      with np.load(path, allow_pickle=False) as z:
        if str(z["text"]) != text or str(z["model_id"]) != self.model_id:
          log.warning("EmbeddingCache: %s holds another text/model; recomputing.", path)
          return None
        rows, mask = z["rows"], z["mask"]
        num_truncated = int(z["num_truncated"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      log.warning("EmbeddingCache: unreadable entry %s (%s); recomputing.", path, e)
      return None
    embeddings = np.zeros(mask.shape + rows.shape[1:], rows.dtype)
    embeddings[:len(rows)] = rows
    return embeddings, mask, num_truncated

  def put(self, text: str, embeddings: np.ndarray, mask: np.ndarray, num_truncated: int) -> None:
    """Stores one text's result atomically. Real tokens must come first (T5 padding is trailing)."""
    n = int(mask.sum())
    if not mask[:n].all() or np.any(embeddings[n:]):
      raise ValueError(f"EmbeddingCache.put({text!r}): expected trailing padding with zero "
                       "embeddings, as TextEncoder returns.")
    path = self._path(text)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, rows=np.asarray(embeddings[:n]), mask=np.asarray(mask, bool),
                 num_truncated=np.int32(num_truncated), text=np.str_(text),
                 model_id=np.str_(self.model_id))
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise

  def get_or_compute(self, texts: Sequence[str], encoder) -> TextEmbeddings:
    """Cached results for `texts`, encoding (in one batched call) and storing the misses."""
    if isinstance(texts, str):
      raise TypeError("EmbeddingCache.get_or_compute: texts must be a sequence of str.")
    if not texts:
      raise ValueError("EmbeddingCache.get_or_compute: texts is empty.")
    encoder_id = getattr(encoder, "model_id", None)
    if encoder_id is not None and encoder_id != self.model_id:
      raise ValueError(f"EmbeddingCache: cache is for model {self.model_id!r} but the encoder is "
                       f"{encoder_id!r}; open a cache with the encoder's model_id.")
    found: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for text in dict.fromkeys(texts):
      entry = self.get(text)
      if entry is not None:
        found[text] = entry
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    self.hits += sum(1 for t in texts if t in found)
    self.misses += len(missing)
    if missing:
      computed = encoder.encode(missing)
      for i, text in enumerate(missing):
        entry = (computed.embeddings[i], computed.mask[i], int(computed.num_truncated[i]))
        self.put(text, *entry)
        found[text] = entry
    return TextEmbeddings(
        embeddings=np.stack([found[t][0] for t in texts]),
        mask=np.stack([found[t][1] for t in texts]),
        num_truncated=np.asarray([found[t][2] for t in texts], np.int32))
