"""Checkpointable batch iterators: the contract between data pipelines and the trainer.

The trainer saves `get_state()` (a small JSON-able dict) with every checkpoint and calls
`set_state()` on resume, so a resumed run sees exactly the batches an uninterrupted one would.
Each process yields its own rows of the global batch (global batch / process count).
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]


class CheckpointableIterator(abc.ABC, Iterator[Batch]):
  """An iterator of host-local numpy batches whose position can be saved and restored."""

  @abc.abstractmethod
  def __next__(self) -> Batch:
    ...

  @abc.abstractmethod
  def get_state(self) -> dict[str, Any]:
    ...

  @abc.abstractmethod
  def set_state(self, state: dict[str, Any]) -> None:
    ...

  def __iter__(self):
    return self


class IndexedBatchIterator(CheckpointableIterator):
  """Batch i is `make_batch(i)`: a pure function of the index, so the position is one integer.

  Suits procedurally generated data and random-access sources; `make_batch` should already return
  only this process's rows.
  """

  def __init__(self, make_batch: Callable[[int], Batch], start: int = 0):
    self._make_batch = make_batch
    self._index = start

  def __next__(self) -> Batch:
    batch = self._make_batch(self._index)
    self._index += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"index": self._index}

  def set_state(self, state: dict[str, Any]) -> None:
    if "index" not in state:
      raise ValueError(f"IndexedBatchIterator: data state {state} has no 'index'.")
    self._index = int(state["index"])


class TfDatasetIterator(CheckpointableIterator):
  """Wraps a deterministic tf.data pipeline (e.g. from seqio); the position is the batch count.

  Restoring rebuilds the pipeline and skips the consumed batches, which is exact for deterministic
  pipelines (fixed shuffle seeds) and cheap for the pretokenized data vp_jax trains on.
  """

  def __init__(self, make_dataset: Callable[[], Any]):
    self._make_dataset = make_dataset
    self._consumed = 0
    self._it = iter(make_dataset().as_numpy_iterator())

  def __next__(self) -> Batch:
    batch = next(self._it)
    self._consumed += 1
    return dict(batch)

  def get_state(self) -> dict[str, Any]:
    return {"batches_consumed": self._consumed}

  def set_state(self, state: dict[str, Any]) -> None:
    if "batches_consumed" not in state:
      raise ValueError(f"TfDatasetIterator: data state {state} has no 'batches_consumed'.")
    self._consumed = int(state["batches_consumed"])
    self._it = iter(self._make_dataset().skip(self._consumed).as_numpy_iterator())


def synthetic_lm_batches(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0,
                         process_index: int = 0, process_count: int = 1) -> IndexedBatchIterator:
  """Learnable token sequences: each row counts up from a random start with a random stride
  (mod vocab). The next token is predictable from the previous two, so a small LM's loss falls well
  below log(vocab). Rows are split across processes by `process_index`."""
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes.")
  local = batch_size // process_count

  def make_batch(index: int) -> Batch:
    rng = np.random.default_rng([seed, index])
    start = rng.integers(0, vocab_size, (batch_size, 1))
    stride = rng.integers(1, 8, (batch_size, 1))
    seq = (start + stride * np.arange(seq_len + 1)[None]) % vocab_size
    rows = slice(process_index * local, (process_index + 1) * local)
    seq = seq[rows].astype(np.int32)
    return {"inputs": seq[:, :-1], "targets": seq[:, 1:],
            "loss_mask": np.ones((local, seq_len), np.int32)}

  return IndexedBatchIterator(make_batch)
