"""`TfDatasetIterator` on small tf.data pipelines: the batches it yields, its position (the number
of batches consumed), and that restoring a position rebuilds the pipeline and skips exactly that
many batches, for a plain and for a shuffled, repeated pipeline."""
import json

import numpy as np
import pytest
import tensorflow as tf

from vp_jax.data.iterators import CheckpointableIterator, TfDatasetIterator


class Pipeline:
  """make_dataset for the iterator: rows {"x": i, "sq": i * i} for i < n, optionally shuffled
  (fixed seed) and repeated, in batches of 2; counts how often it was built."""

  def __init__(self, n=10, shuffle=False, repeat=False):
    self.n, self.shuffle, self.repeat, self.builds = n, shuffle, repeat, 0

  def __call__(self):
    self.builds += 1
    ds = tf.data.Dataset.range(self.n).map(lambda i: {"x": i, "sq": i * i})
    if self.shuffle:
      ds = ds.shuffle(self.n, seed=7)
    if self.repeat:
      ds = ds.repeat()
    return ds.batch(2, drop_remainder=True)


def test_batches_are_dicts_of_numpy_and_the_position_counts_them():
  make = Pipeline()
  it = TfDatasetIterator(make)
  assert isinstance(it, CheckpointableIterator) and iter(it) is it
  assert it.get_state() == {"batches_consumed": 0} and make.builds == 1
  first = next(it)
  assert type(first) is dict and set(first) == {"x", "sq"}
  assert isinstance(first["x"], np.ndarray) and first["x"].dtype == np.int64
  np.testing.assert_array_equal(first["x"], [0, 1])
  np.testing.assert_array_equal(first["sq"], [0, 1])
  second = next(it)
  np.testing.assert_array_equal(second["x"], [2, 3])
  np.testing.assert_array_equal(second["sq"], [4, 9])
  assert it.get_state() == {"batches_consumed": 2}
  assert json.loads(json.dumps(it.get_state())) == {"batches_consumed": 2}   # saved as JSON


def test_restore_at_three_skips_exactly_three_batches():
  fresh = TfDatasetIterator(Pipeline())
  expected = [next(fresh)["x"] for _ in range(5)]
  np.testing.assert_array_equal(expected, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
  make = Pipeline()
  restored = TfDatasetIterator(make)
  next(restored)                                   # its own position is overwritten
  restored.set_state({"batches_consumed": 3})
  assert make.builds == 2                          # the pipeline is rebuilt, then skipped
  assert restored.get_state() == {"batches_consumed": 3}
  np.testing.assert_array_equal(next(restored)["x"], [6, 7])    # the 4th batch
  np.testing.assert_array_equal(next(restored)["sq"], [64, 81])
  assert restored.get_state() == {"batches_consumed": 5}
  # One epoch of 10 rows is 5 batches: the end is reached, and the count stays at 5.
  with pytest.raises(StopIteration):
    next(restored)
  assert restored.get_state() == {"batches_consumed": 5}
  # Position 0 starts over; a string count (e.g. from a hand-edited JSON) is read as an int.
  restored.set_state({"batches_consumed": "0"})
  np.testing.assert_array_equal(next(restored)["x"], [0, 1])
  assert restored.get_state() == {"batches_consumed": 1}


def test_restore_of_a_shuffled_repeated_pipeline_continues_the_same_stream():
  fresh = TfDatasetIterator(Pipeline(shuffle=True, repeat=True))
  stream = [next(fresh) for _ in range(8)]       # 8 batches of 2: over 1.5 epochs of 10 rows
  first_epoch = np.concatenate([b["x"] for b in stream[:5]])
  assert sorted(first_epoch.tolist()) == list(range(10))
  assert first_epoch.tolist() != list(range(10))               # really shuffled
  for b in stream:
    np.testing.assert_array_equal(b["sq"], b["x"] ** 2)
  for position in (3, 6):
    it = TfDatasetIterator(Pipeline(shuffle=True, repeat=True))
    it.set_state({"batches_consumed": position})
    for want in stream[position:]:
      got = next(it)
      np.testing.assert_array_equal(got["x"], want["x"])
      np.testing.assert_array_equal(got["sq"], want["sq"])
    assert it.get_state() == {"batches_consumed": 8}


def test_a_state_without_the_count_is_refused():
  it = TfDatasetIterator(Pipeline())
  with pytest.raises(ValueError, match=r"TfDatasetIterator: data state \{'index': 3\} has no "
                                       r"'batches_consumed'"):
    it.set_state({"index": 3})                   # an IndexedBatchIterator's state
  np.testing.assert_array_equal(next(it)["x"], [0, 1])   # unchanged by the refused state
