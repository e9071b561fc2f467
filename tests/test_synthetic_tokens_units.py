"""`copy_task_example` and `copy_task_batches` directly: the copy (and reversed copy) lands in the
output segment, codes stay in range, batches are reproducible by index, and layouts the task cannot
fill are refused."""
import numpy as np
import pytest

from vp_jax.models.prefix_lm.config import preset
from vp_jax.sequence import layout as L
from vp_jax.sequence.synthetic_tokens import copy_task_batches, copy_task_example

VOCAB = preset("tiny").vocab
LAYOUT = L.make_layout(L.Task.INPAINTING, vocab=VOCAB, with_text=True, text_length=8,
                       latent_hw=(2, 4))                        # video_in / video_out (5, 2, 4)


def test_copy_task_example_copies_the_input_codes_into_the_output():
  ex = copy_task_example(LAYOUT, np.random.default_rng(0), num_codes=16)
  grids = LAYOUT.extract(ex["tokens"])
  assert grids[L.VIDEO_IN].shape == (5, 2, 4)
  np.testing.assert_array_equal(grids[L.VIDEO_OUT], grids[L.VIDEO_IN])
  assert grids[L.VIDEO_IN].min() >= 0 and grids[L.VIDEO_IN].max() < 16
  assert len(np.unique(grids[L.VIDEO_IN])) > 8        # random codes, not a constant grid
  assert int(ex["prefix_length"]) == LAYOUT.prefix_length
  np.testing.assert_array_equal(ex["loss_mask"], np.arange(LAYOUT.length) >= LAYOUT.prefix_length)


def test_copy_task_example_reverse_is_the_raster_order_reversal():
  ex = copy_task_example(LAYOUT, np.random.default_rng(1), num_codes=64, reverse=True)
  grids = LAYOUT.extract(ex["tokens"])
  src = grids[L.VIDEO_IN]
  np.testing.assert_array_equal(grids[L.VIDEO_OUT], src.reshape(-1)[::-1].reshape(src.shape))
  assert not np.array_equal(grids[L.VIDEO_OUT], src)
  # The same generator state gives the same input codes whether or not the output is reversed.
  plain = LAYOUT.extract(copy_task_example(LAYOUT, np.random.default_rng(1), num_codes=64)["tokens"])
  np.testing.assert_array_equal(plain[L.VIDEO_IN], src)


def test_copy_task_example_refuses_a_layout_without_equal_video_segments():
  t2v = L.make_layout(L.Task.TEXT_TO_VIDEO, vocab=VOCAB, with_text=True, text_length=8,
                      latent_hw=(2, 4))
  with pytest.raises(ValueError, match="copy task needs a layout"):
    copy_task_example(t2v, np.random.default_rng(0), num_codes=16)


def test_copy_task_batches_are_a_function_of_seed_and_index():
  batches = copy_task_batches(LAYOUT, 3, text_dim=5, num_codes=16, seed=7)
  first, second = next(batches), next(batches)
  again = next(copy_task_batches(LAYOUT, 3, text_dim=5, num_codes=16, seed=7))
  assert sorted(again) == sorted(first)
  for key in first:
    np.testing.assert_array_equal(again[key], first[key])
  assert not np.array_equal(first["tokens"], second["tokens"])
  resumed = copy_task_batches(LAYOUT, 3, text_dim=5, num_codes=16, seed=7)
  resumed.set_state({"index": 1})                     # a checkpointed position
  at_one = next(resumed)
  for key in second:
    np.testing.assert_array_equal(at_one[key], second[key])
  assert first["tokens"].shape == (3, LAYOUT.length)
  _, text_len = LAYOUT.text_slots()
  assert first["text_embeddings"].shape == (3, text_len, 5)
  lengths = first["text_mask"].sum(axis=1)
  assert first["text_mask"].shape == (3, text_len) and lengths.min() >= 1
  # Each row's mask is a prefix of ones.
  np.testing.assert_array_equal(first["text_mask"], np.arange(text_len)[None] < lengths[:, None])
