"""The moving-shapes data the tokenizer recipe trains and is scored on: deterministic per (seed,
batch index), a vertical two-colour gradient with 1-3 shapes that move and stay inside the frame,
and the checkpointable iterator's process split and resume."""
import numpy as np
import pytest

from vp_jax.models.magvit import synthetic


def test_clip_content():
  clip = synthetic.moving_shapes_clip(np.random.default_rng(7), 9, 32, 24)
  assert clip.shape == (9, 32, 24, 3) and clip.dtype == np.uint8
  again = synthetic.moving_shapes_clip(np.random.default_rng(7), 9, 32, 24)
  np.testing.assert_array_equal(clip, again)
  # The background is a linear ramp top -> bottom: the draws that made it, replayed.
  top, bottom = np.random.default_rng(7).uniform(0, 255, (2, 3))
  ramp = np.linspace(0.0, 1.0, 32)[:, None]
  background = np.clip(np.round(top * (1 - ramp) + bottom * ramp), 0, 255)       # [H, 3]
  is_background = np.all(clip == background[None, :, None, :].astype(np.uint8), axis=-1)
  covered = 1.0 - is_background.mean(axis=(1, 2))                                 # per frame
  assert np.all(covered > 0.01) and np.all(covered < 0.9)   # shapes (>= 12% of the side) present
  assert np.any(clip[0] != clip[-1])                        # and moving


def test_batches_and_iterator():
  a = synthetic.moving_shapes_batch(3, 0, 4, 5, 16, 16)
  assert a.shape == (4, 5, 16, 16, 3)
  np.testing.assert_array_equal(a, synthetic.moving_shapes_batch(3, 0, 4, 5, 16, 16))
  assert np.any(a != synthetic.moving_shapes_batch(3, 1, 4, 5, 16, 16))   # another index
  assert np.any(a != synthetic.moving_shapes_batch(4, 0, 4, 5, 16, 16))   # another seed
  it = synthetic.moving_shapes_iterator(4, 5, 16, 16, seed=3)
  np.testing.assert_array_equal(next(it)["video"], a)
  state = it.get_state()
  second = next(it)["video"]
  resumed = synthetic.moving_shapes_iterator(4, 5, 16, 16, seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["video"], second)
  # Two processes: each gets its half of the same global batch.
  halves = [next(synthetic.moving_shapes_iterator(4, 5, 16, 16, seed=3, process_index=p,
                                                  process_count=2))["video"] for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), a)
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    synthetic.moving_shapes_iterator(4, 5, 16, 16, process_count=3)
