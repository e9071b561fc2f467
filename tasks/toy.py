"""`toy_counting`: a synthetic seqio task for the trainer's smoke runs before the VideoPoet tasks.

Each example is a sequence counting up from a random start with a random stride (mod 256); the next
token follows from the previous two, so a small LM learns it in a few hundred steps. Deterministic:
example i of a split is a function of (split, i) alone.
"""
import numpy as np
import seqio
import tensorflow as tf

VOCAB_SIZE = 256
MAX_LENGTH = 1024
_SPLIT_SEEDS = {"train": 0, "validation": 1}


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
  del shuffle_files, seed  # procedurally generated, in a fixed order

  def make(index):
    rng = np.random.default_rng([_SPLIT_SEEDS[split], int(index)])
    start, stride = rng.integers(0, VOCAB_SIZE), rng.integers(1, 8)
    return ((start + stride * np.arange(MAX_LENGTH)) % VOCAB_SIZE).astype(np.int32)

  indices = tf.data.Dataset.range(2**31 - 1)
  return indices.map(lambda i: {"targets": tf.ensure_shape(
      tf.numpy_function(make, [i], tf.int32), [MAX_LENGTH])})


seqio.TaskRegistry.add(
    "toy_counting",
    source=seqio.FunctionDataSource(_dataset_fn, splits=tuple(_SPLIT_SEEDS)),
    preprocessors=[],
    output_features={"targets": seqio.Feature(seqio.PassThroughVocabulary(VOCAB_SIZE),
                                              add_eos=False, dtype=tf.int32)},
)
