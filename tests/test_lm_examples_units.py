"""`tf_build_choice` on its own: future prediction with 1, 2 or 3 latent context frames (one length,
a moving prefix) picked by a tensor index gives exactly the numpy `Layout.build` example of the
picked layout, eagerly and inside tf.data with a per-example index; layouts of different lengths
are refused."""
import numpy as np
import pytest
import tensorflow as tf

from vp_jax.data.lm_examples import tf_build_choice
from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence import layout as L

LATENT_HW = (2, 3)
CONTEXTS = (1, 2, 3)
GRID = np.random.default_rng(0).integers(0, SMALL_VOCAB.visual_codes, (5, *LATENT_HW)).astype(
    np.int32)                                   # 17 frames -> 5 latent frames


def _layouts():
  return [L.make_layout("future_prediction", vocab=SMALL_VOCAB, latent_hw=LATENT_HW,
                        text_length=4, with_text=True, context_frames=c) for c in CONTEXTS]


def _split(lay, grid):
  c = lay.segment(L.VIDEO_IN).shape[0]
  return {L.VIDEO_IN: grid[:c], L.VIDEO_OUT: grid[c:]}


def _codes_fn(lay):
  return _split(lay, tf.constant(GRID))


def _expected(i):
  lay = _layouts()[i]
  return lay.build(_split(lay, GRID))


def test_layouts_share_a_length_and_the_prefix_moves_by_one_latent_frame():
  layouts = _layouts()
  assert len({lay.length for lay in layouts}) == 1
  prefixes = [lay.prefix_length for lay in layouts]
  assert np.diff(prefixes).tolist() == [6, 6]          # one 2 x 3 latent frame each


@pytest.mark.parametrize("i", range(len(CONTEXTS)))
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_eager_choice_is_the_picked_layouts_example(i, dtype):
  got = tf_build_choice(_layouts(), tf.constant(i, dtype), _codes_fn)
  ref = _expected(i)
  assert sorted(got) == ["loss_mask", "prefix_length", "tokens"]
  np.testing.assert_array_equal(got["tokens"].numpy(), ref["tokens"])
  np.testing.assert_array_equal(got["loss_mask"].numpy(), ref["loss_mask"])
  assert int(got["prefix_length"]) == int(ref["prefix_length"]) == _layouts()[i].prefix_length
  # The loss covers exactly the positions after the picked prefix.
  assert int(got["loss_mask"].numpy().sum()) == _layouts()[i].length - _layouts()[i].prefix_length


def test_choice_per_example_inside_tf_data():
  layouts = _layouts()
  order = [2, 0, 1, 1]
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(order, tf.int32)).map(
      lambda i: tf_build_choice(layouts, i, _codes_fn))
  got = list(ds.as_numpy_iterator())
  for i, ex in zip(order, got):
    ref = _expected(i)
    np.testing.assert_array_equal(ex["tokens"], ref["tokens"])
    np.testing.assert_array_equal(ex["loss_mask"], ref["loss_mask"])
    assert ex["prefix_length"] == ref["prefix_length"]
  assert len({ex["prefix_length"] for ex in got}) == 3


def test_layouts_of_different_lengths_are_refused():
  short = L.make_layout("text_to_image", vocab=SMALL_VOCAB, latent_hw=LATENT_HW, text_length=4)
  long = _layouts()[0]
  assert short.length < long.length
  with pytest.raises(ValueError) as e:
    tf_build_choice([long, short], tf.constant(0), _codes_fn)
  assert str(e.value) == (f"tf_build_choice: layouts have different lengths "
                          f"[{short.length}, {long.length}].")


@pytest.mark.parametrize("index", [3, -1])
def test_an_index_outside_the_layouts_is_an_error(index):
  """tf.switch_case alone would run the last layout for any out-of-range index."""
  with pytest.raises(tf.errors.InvalidArgumentError, match="tf_build_choice"):
    tf_build_choice(_layouts(), tf.constant(index), _codes_fn)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant([0, index])).map(
      lambda i: tf_build_choice(_layouts(), i, _codes_fn))
  with pytest.raises(tf.errors.InvalidArgumentError, match="tf_build_choice"):
    list(ds.as_numpy_iterator())
