"""Alternating gradient descent batching (paper 4.2, after Akbari et al. 2023): no padding.

Every step trains on one group of examples of a single task and a single sequence length. The
group's task is drawn per step from the rates of a `vp_jax.data.mixing.RateSchedule` (a pure
function of seed and step, so every process draws the same one); the batch is the next one of that
task's stream, which batches same-length examples together (`group_by_window` on the length), so no
position is ever padded. Each group may have its own batch size: with `tokens_per_batch` a batch
holds about that many tokens (images, 5x shorter than videos, get 5x more rows, as in the paper),
rounded down to a multiple of `batch_multiple` (the batch-parallel device count).

The iterator's position is its state: the step and the number of batches taken from each task.
`set_state` rebuilds each task's deterministic pipeline and skips the batches already taken, so a
resumed run sees exactly the batches an uninterrupted one would. `stats()` counts batches per
(task, length) and the padding ratio (PAD positions / positions; 0 by construction).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from vp_jax.data.iterators import Batch, CheckpointableIterator
from vp_jax.data.mixing import RateSchedule, draw_task
from vp_jax.sequence.vocab import Special

DatasetFn = Callable[[str], tf.data.Dataset]   # task name -> deterministic, infinite examples


def batch_rows(length: int, *, batch_size: int | None, tokens_per_batch: int | None,
               batch_multiple: int = 1) -> int:
  """Rows of a batch of sequences of `length` tokens (global batch)."""
  if (batch_size is None) == (tokens_per_batch is None):
    raise ValueError("give exactly one of batch_size and tokens_per_batch.")
  if batch_size is not None:
    if batch_size < 1 or batch_size % batch_multiple:
      raise ValueError(f"batch_size={batch_size} must be a positive multiple of "
                       f"batch_multiple={batch_multiple}.")
    return batch_size
  rows = (tokens_per_batch // length) // batch_multiple * batch_multiple
  if rows < 1:
    raise ValueError(f"tokens_per_batch={tokens_per_batch} holds no {batch_multiple} rows of "
                     f"{length} tokens.")
  return rows


class AGDIterator(CheckpointableIterator):
  """One unpadded (task, length) batch per step, task drawn by the schedule; exactly resumable.

  `dataset_fn(task)` returns that task's examples (dicts with `tokens` [L] and other features),
  deterministic and repeated. Batches are this process's rows: the global rows / `process_count`
  (the dataset should already be this process's shard)."""

  def __init__(self, schedule: RateSchedule, dataset_fn: DatasetFn, *, total_steps: int,
               seed: int = 0, batch_size: int | None = None,
               tokens_per_batch: int | None = None, batch_multiple: int = 1,
               process_count: int = 1):
    if total_steps < 1:
      raise ValueError(f"total_steps={total_steps} must be >= 1.")
    if batch_multiple % process_count:
      raise ValueError(f"batch_multiple={batch_multiple} must be a multiple of "
                       f"process_count={process_count}.")
    if (batch_size is None) == (tokens_per_batch is None):
      raise ValueError("AGDIterator: give exactly one of batch_size and tokens_per_batch.")
    if batch_size is not None:
      batch_rows(1, batch_size=batch_size, tokens_per_batch=None, batch_multiple=batch_multiple)
    self.schedule, self._dataset_fn = schedule, dataset_fn
    self.total_steps, self.seed = total_steps, seed
    self._batch_size, self._tokens_per_batch = batch_size, tokens_per_batch
    self._batch_multiple, self._process_count = batch_multiple, process_count
    self._step = 0
    self._taken: dict[str, int] = {}
    self._iters: dict[str, Any] = {}
    self._batches: dict[str, int] = {}        # "task/length" -> batches
    self._positions = 0
    self._pad = 0

  def _stream(self, task: str):
    batch_size, tpb = self._batch_size, self._tokens_per_batch
    multiple, processes = self._batch_multiple, self._process_count

    def key(ex):
      return tf.cast(tf.shape(ex["tokens"])[0], tf.int64)

    def window(length):                       # batch_rows(length) // process_count, in TF
      if batch_size is not None:
        return tf.constant(batch_size // processes, tf.int64)
      rows = (tpb // length) // multiple * multiple
      check = tf.debugging.assert_positive(
          rows, message=f"{task}: tokens_per_batch={tpb} holds no {multiple} rows of this length")
      with tf.control_dependencies([check]):
        return rows // processes

    def reduce(length, ds):
      return ds.batch(window(length), drop_remainder=True)

    ds = self._dataset_fn(task)
    ds = ds.group_by_window(key, reduce, window_size_func=window)
    return iter(ds.skip(self._taken.get(task, 0)).as_numpy_iterator())

  def __next__(self) -> Batch:
    task = draw_task(self.schedule, self._step, self.total_steps, self.seed)
    if task not in self._iters:
      self._iters[task] = self._stream(task)
    batch = dict(next(self._iters[task]))
    self._taken[task] = self._taken.get(task, 0) + 1
    self._step += 1
    tokens = batch["tokens"]
    group = f"{task}/{tokens.shape[1]}"
    self._batches[group] = self._batches.get(group, 0) + 1
    self._positions += tokens.size
    self._pad += int(np.sum(tokens == Special.PAD))
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "taken": dict(self._taken), "seed": self.seed}

  def set_state(self, state: dict[str, Any]) -> None:
    if "step" not in state or "taken" not in state:
      raise ValueError(f"AGDIterator: data state {state} has no 'step'/'taken' (a checkpoint of "
                       "another iterator?).")
    if state.get("seed", self.seed) != self.seed:
      raise ValueError(f"AGDIterator: checkpoint was taken with seed {state['seed']}, this run "
                       f"uses {self.seed}.")
    unknown = set(state["taken"]) - set(self.schedule.tasks)
    if unknown:
      raise ValueError(f"AGDIterator: checkpoint has tasks {sorted(unknown)} that this "
                       "schedule does not sample.")
    self._step = int(state["step"])
    self._taken = {k: int(v) for k, v in state["taken"].items()}
    self._iters = {}

  def stats(self) -> dict[str, Any]:
    """Batches per "task/length" and the padding ratio of everything yielded so far."""
    return {"batches": dict(self._batches),
            "padding_ratio": self._pad / self._positions if self._positions else 0.0}
