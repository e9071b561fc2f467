"""Batches of the built-in dataset for training the tokenizers on the data they will tokenize.

The video tokenizer sees the dataset's frames, the audio tokenizer crops of its soundtracks (the
demo trains both on exactly what the tokenization job later encodes). Batch `i` holds examples
`i * B .. i * B + B - 1` (modulo the split's size) of one split, so the trainer's data position is
one integer (`IndexedBatchIterator`) and a resumed run sees the same batches; held-out evaluation
uses another split. Under several processes each takes its rows of every global batch.
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.iterators import IndexedBatchIterator
from vp_jax.data.synthetic.dataset import SyntheticConfig, SyntheticVideos


def _rows(batch_size: int, process_index: int, process_count: int) -> range:
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes.")
  local = batch_size // process_count
  return range(process_index * local, (process_index + 1) * local)


def video_batches(config: SyntheticConfig, batch_size: int, *, split: str = "train",
                  process_index: int = 0, process_count: int = 1) -> IndexedBatchIterator:
  """{"video": uint8 [B / processes, T, H, W, 3]} batches of the dataset's frames."""
  data, rows = SyntheticVideos(config, split), _rows(batch_size, process_index, process_count)
  return IndexedBatchIterator(lambda i: {"video": np.stack(
      [data[(i * batch_size + r) % len(data)]["frames"] for r in rows])})


def audio_batches(config: SyntheticConfig, batch_size: int, clip_samples: int, *,
                  split: str = "train", process_index: int = 0,
                  process_count: int = 1) -> IndexedBatchIterator:
  """{"wave": float32 [B / processes, clip_samples]} crops of the dataset's soundtracks; the crop
  start is a pure function of (batch, row)."""
  if config.num_frames == 1:
    raise ValueError("audio_batches: the dataset config makes still images, which have no audio.")
  data, rows = SyntheticVideos(config, split), _rows(batch_size, process_index, process_count)

  def crop(i: int, r: int) -> np.ndarray:
    wave = data[(i * batch_size + r) % len(data)]["audio"]
    if wave.shape[0] < clip_samples:
      raise ValueError(f"audio_batches: clip_samples={clip_samples} is longer than the dataset's "
                       f"{wave.shape[0]}-sample soundtracks.")
    start = np.random.default_rng([config.seed, i, r]).integers(0, wave.shape[0] - clip_samples + 1)
    return wave[start:start + clip_samples]

  return IndexedBatchIterator(lambda i: {"wave": np.stack([crop(i, r) for r in rows])})
