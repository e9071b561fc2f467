"""`seqio_lm_batches` drops seqio's prefix mask (`decoder_causal_attention`) for a task with an
"inputs" feature, and that is safe for the causal ToyLM because `loss_mask` is 0 on every inputs
position and 1 on every target: checked on a throwaway task (its own name, so it does not clash
with tests/test_data_seqio_input.py), against seqio's own converter output for the same rows."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from vp_jax.data.seqio_input import seqio_lm_batches

TASK = "seqio_units_prefix_mask_task"
INPUTS = [[5, 6, 7], [8], [9, 10]]
TARGETS = [[20, 21], [22, 23, 24], [25]]
LENGTHS = {"inputs": 3, "targets": 3}


def _dataset(split, shuffle_files, seed=None):
  del split, shuffle_files, seed

  def rows():
    for i, t in zip(INPUTS, TARGETS):
      yield {"inputs": np.int32(i), "targets": np.int32(t)}

  spec = tf.TensorSpec([None], tf.int32)
  return tf.data.Dataset.from_generator(rows, output_signature={"inputs": spec, "targets": spec})


@pytest.fixture(autouse=True)
def _task():
  seqio.TaskRegistry.remove(TASK)
  feature = seqio.Feature(seqio.PassThroughVocabulary(32), add_eos=False, dtype=tf.int32)
  seqio.TaskRegistry.add(TASK, source=seqio.FunctionDataSource(_dataset, splits=["train"]),
                         preprocessors=[], output_features={"inputs": feature, "targets": feature})
  yield
  seqio.TaskRegistry.remove(TASK)


def test_loss_mask_is_zero_on_the_inputs_and_one_on_the_targets():
  b = next(seqio_lm_batches(TASK, LENGTHS, 3, shuffle=False, repeat=False))
  assert set(b) == {"inputs", "targets", "loss_mask"}      # no prefix mask in the batch
  # targets = inputs then targets, 0-padded to 3 + 3; loss only where a target token is predicted.
  np.testing.assert_array_equal(b["targets"], [[5, 6, 7, 20, 21, 0], [8, 22, 23, 24, 0, 0],
                                                [9, 10, 25, 0, 0, 0]])
  np.testing.assert_array_equal(b["loss_mask"], [[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0],
                                                  [0, 0, 1, 0, 0, 0]])
  for row, (i, t) in enumerate(zip(INPUTS, TARGETS)):
    assert b["loss_mask"][row, :len(i)].sum() == 0                 # the inputs part
    assert b["loss_mask"][row, len(i):len(i) + len(t)].tolist() == [1] * len(t)
    assert b["loss_mask"][row, len(i) + len(t):].sum() == 0        # padding


def test_the_dropped_prefix_mask_covers_only_unweighted_positions_but_the_first_target():
  """seqio's mask is 1 on positions 0..len(inputs) of `inputs` (BOS + the inputs); the only one of
  them with loss weight is the last, where the whole prefix predicts the first target token, which
  a causal model also sees in full. So the causal model's loss is over the same tokens."""
  raw = next(seqio.get_dataset(
      TASK, LENGTHS, dataset_split="train", shuffle=False, num_epochs=1,
      feature_converter=seqio.DecoderFeatureConverter(pack=False)).batch(3).as_numpy_iterator())
  prefix = raw["decoder_causal_attention"]
  np.testing.assert_array_equal(prefix, [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0],
                                         [1, 1, 1, 0, 0, 0]])
  b = next(seqio_lm_batches(TASK, LENGTHS, 3, shuffle=False, repeat=False))
  np.testing.assert_array_equal(b["inputs"], raw["decoder_input_tokens"])
  np.testing.assert_array_equal(b["targets"], raw["decoder_target_tokens"])
  np.testing.assert_array_equal(b["loss_mask"], raw["decoder_loss_weights"])
  for row, i in enumerate(INPUTS):
    assert prefix[row].sum() == len(i) + 1
    np.testing.assert_array_equal(b["loss_mask"][row, :len(i) + 1] * prefix[row, :len(i) + 1],
                                  [0] * len(i) + [1])
