"""`seqio_lm_batches` on a throwaway seqio task: the renamed decoder-only features, their padding
and loss mask for prefix-LM (inputs + targets) and LM (targets only) lengths, the prefix mask they
leave out, the row order without shuffling, the end of a single epoch, a shuffled stream resumed
from its batch count; and the error for an unknown name."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from vp_jax.data.seqio_input import seqio_lm_batches

TASK = "seqio_input_test_task"
INPUTS = {"train": [[1, 2], [3], [4, 5, 6], [7]], "validation": [[20], [21, 22]]}
TARGETS = {"train": [[8, 9, 10], [11], [12, 13], [14, 15, 16, 17]],
           "validation": [[23, 24], [25]]}


def _dataset(split, shuffle_files, seed=None):
  del shuffle_files, seed

  def rows():
    for i, t in zip(INPUTS[split], TARGETS[split]):
      yield {"inputs": np.int32(i), "targets": np.int32(t)}

  spec = tf.TensorSpec([None], tf.int32)
  return tf.data.Dataset.from_generator(rows, output_signature={"inputs": spec, "targets": spec})


@pytest.fixture(autouse=True)
def _task():
  seqio.TaskRegistry.remove(TASK)
  feature = seqio.Feature(seqio.PassThroughVocabulary(32), add_eos=False, dtype=tf.int32)
  seqio.TaskRegistry.add(
      TASK, source=seqio.FunctionDataSource(_dataset, splits=["train", "validation"]),
      preprocessors=[], output_features={"inputs": feature, "targets": feature})
  yield
  seqio.TaskRegistry.remove(TASK)


def test_prefix_lm_lengths_give_inputs_then_targets_with_loss_on_targets():
  it = seqio_lm_batches(TASK, {"inputs": 3, "targets": 4}, 2, shuffle=False)
  first, second = next(it), next(it)
  for b in (first, second):
    assert set(b) == {"inputs", "targets", "loss_mask"}
    assert all(v.shape == (2, 7) and v.dtype == np.int32 for v in b.values())
  # targets: inputs then targets, 0-padded to 3 + 4; inputs: the same shifted right after BOS 0.
  np.testing.assert_array_equal(first["targets"], [[1, 2, 8, 9, 10, 0, 0], [3, 11, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(first["inputs"], [[0, 1, 2, 8, 9, 10, 0], [0, 3, 11, 0, 0, 0, 0]])
  np.testing.assert_array_equal(first["loss_mask"], [[0, 0, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(second["targets"], [[4, 5, 6, 12, 13, 0, 0],
                                                    [7, 14, 15, 16, 17, 0, 0]])
  np.testing.assert_array_equal(second["inputs"], [[0, 4, 5, 6, 12, 13, 0],
                                                   [0, 7, 14, 15, 16, 17, 0]])
  np.testing.assert_array_equal(second["loss_mask"], [[0, 0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0, 0]])
  assert it.get_state() == {"batches_consumed": 2}
  # Repeated: the third batch starts the second epoch.
  np.testing.assert_array_equal(next(it)["targets"], first["targets"])


def test_the_dropped_prefix_mask_covers_only_unweighted_positions_but_the_first_target():
  """The batches leave out seqio's `decoder_causal_attention` (1 over BOS + the inputs). Of those
  positions only the last has loss weight, where the whole prefix predicts the first target token,
  which a causal model also sees in full; so the causal ToyLM's loss is over the same tokens."""
  lengths = {"inputs": 3, "targets": 4}
  raw = next(seqio.get_dataset(
      TASK, lengths, dataset_split="train", shuffle=False, num_epochs=1,
      feature_converter=seqio.DecoderFeatureConverter(pack=False)).batch(4).as_numpy_iterator())
  prefix = raw["decoder_causal_attention"]
  np.testing.assert_array_equal(prefix, [[1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0],
                                         [1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
  b = next(seqio_lm_batches(TASK, lengths, 4, shuffle=False, repeat=False))
  assert "decoder_causal_attention" not in b and set(b) == {"inputs", "targets", "loss_mask"}
  np.testing.assert_array_equal(b["inputs"], raw["decoder_input_tokens"])
  np.testing.assert_array_equal(b["targets"], raw["decoder_target_tokens"])
  np.testing.assert_array_equal(b["loss_mask"], raw["decoder_loss_weights"])
  for row, i in enumerate(INPUTS["train"]):
    np.testing.assert_array_equal(b["loss_mask"][row, :len(i) + 1] * prefix[row, :len(i) + 1],
                                  [0] * len(i) + [1])


def test_targets_only_lengths_give_lm_rows_of_the_targets():
  it = seqio_lm_batches(TASK, {"targets": 4}, 4, shuffle=False)
  b = next(it)
  assert set(b) == {"inputs", "targets", "loss_mask"} and b["targets"].shape == (4, 4)
  np.testing.assert_array_equal(b["targets"], [[8, 9, 10, 0], [11, 0, 0, 0], [12, 13, 0, 0],
                                               [14, 15, 16, 17]])
  np.testing.assert_array_equal(b["inputs"], [[0, 8, 9, 10], [0, 11, 0, 0], [0, 12, 13, 0],
                                              [0, 14, 15, 16]])
  np.testing.assert_array_equal(b["loss_mask"], b["targets"] != 0)


def test_one_epoch_of_another_split_ends():
  it = seqio_lm_batches(TASK, {"inputs": 2, "targets": 2}, 2, split="validation", shuffle=False,
                        repeat=False)
  b = next(it)
  np.testing.assert_array_equal(b["targets"], [[20, 23, 24, 0], [21, 22, 25, 0]])
  np.testing.assert_array_equal(b["loss_mask"], [[0, 1, 1, 0], [0, 0, 1, 0]])
  with pytest.raises(StopIteration):
    next(it)
  # Batches are whole: 2 rows never make a batch of 4.
  with pytest.raises(StopIteration):
    next(seqio_lm_batches(TASK, {"targets": 2}, 4, split="validation", repeat=False))


def test_shuffled_batches_are_deterministic_and_resume_from_the_count():
  lengths = {"inputs": 3, "targets": 4}
  unshuffled = next(seqio_lm_batches(TASK, lengths, 4, shuffle=False))["targets"]
  epoch = seqio_lm_batches(TASK, lengths, 2, seed=5, repeat=False)
  rows = [tuple(r) for _ in range(2) for r in next(epoch)["targets"]]
  assert sorted(rows) == sorted(tuple(r) for r in unshuffled)            # one epoch, all 4 rows
  it = seqio_lm_batches(TASK, lengths, 2, seed=5)
  batches = [next(it) for _ in range(3)]
  assert all(tuple(r) in set(rows) for b in batches for r in b["targets"])
  resumed = seqio_lm_batches(TASK, lengths, 2, seed=5)
  resumed.set_state({"batches_consumed": 2})
  got = next(resumed)
  for k in batches[2]:
    np.testing.assert_array_equal(got[k], batches[2][k])


def test_unregistered_name_is_refused_naming_the_setting():
  with pytest.raises(ValueError, match="MIXTURE_OR_TASK_NAME='no_such_task_xyz' is not registered "
                                       r"\(did you import its module"):
    seqio_lm_batches("no_such_task_xyz", {"targets": 4}, 2)
