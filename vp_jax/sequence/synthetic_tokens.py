"""Synthetic token tasks over real task layouts: a check that an LM learns, before real data.

`copy_task_batches` fills a layout's visual input with random codes and asks for them back in the
output (copied, or reversed in raster order), with random text embeddings in the text slots. A prefix
LM must attend from every output position into the bidirectional prefix to solve it, so it exercises
the layout, the prefix mask, the text path and the loss mask together; a model that reaches high
accuracy on it has working plumbing. Used by the LM's training test, the MFU benchmark and the demo's
smoke run.
"""
from __future__ import annotations

import numpy as np

from vp_jax.data.iterators import IndexedBatchIterator
from vp_jax.sequence.layout import VIDEO_IN, VIDEO_OUT, Layout


def copy_task_example(layout: Layout, rng: np.random.Generator, *, num_codes: int,
                      reverse: bool = False) -> dict[str, np.ndarray]:
  """One example: video_in random codes in [0, num_codes); video_out = video_in (or reversed)."""
  if set(layout.code_inputs) != {VIDEO_IN, VIDEO_OUT} or (
      layout.segment(VIDEO_IN).shape != layout.segment(VIDEO_OUT).shape):
    raise ValueError(f"copy task needs a layout with equal-shape {VIDEO_IN}/{VIDEO_OUT} only; "
                     f"{layout.task.value} has {layout.code_inputs}.")
  codes = rng.integers(0, num_codes, layout.segment(VIDEO_IN).shape).astype(np.int32)
  out = codes.reshape(-1)[::-1].reshape(codes.shape) if reverse else codes
  return layout.build({VIDEO_IN: codes, VIDEO_OUT: out})


def copy_task_batches(layout: Layout, batch_size: int, *, text_dim: int, num_codes: int = 64,
                      reverse: bool = False, seed: int = 0) -> IndexedBatchIterator:
  """Batches in the PrefixLM format (tokens, prefix_length, loss_mask, text_embeddings,
  text_mask); batch i depends only on (seed, i), so the iterator is checkpointable."""
  start, text_len = layout.text_slots()
  del start

  def make_batch(index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    rows = [copy_task_example(layout, rng, num_codes=num_codes, reverse=reverse)
            for _ in range(batch_size)]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    t = max(text_len, 1)
    batch["text_embeddings"] = rng.normal(size=(batch_size, t, text_dim)).astype(np.float32)
    lengths = rng.integers(1, t + 1, (batch_size, 1))
    batch["text_mask"] = np.arange(t)[None] < lengths
    return batch

  return IndexedBatchIterator(make_batch)
