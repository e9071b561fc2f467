"""Building LM examples inside tf.data: the TensorFlow twin of `Layout.build`.

The seqio tasks turn pretokenized clips (`vp_jax.data.tokenized`) into prefix-LM examples in the
input pipeline, so the layout must be applied to tf tensors. `tf_build(layout, codes)` concatenates
the layout's segments exactly as `Layout.build` does in numpy (special ids, `TEXT_SLOT` runs, codes
shifted into the unified vocabulary, audio level-major) and checks every code against the
vocabulary's range, failing with the segment's name; tests compare the two builders token by token.

`tf_build_choice` builds one of several layouts of equal length picked per example by a tensor index
(future prediction with a variable number of context frames: the length is fixed, the prefix moves).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from vp_jax.sequence.layout import Layout
from vp_jax.sequence.vocab import Special


def _checked(grid: tf.Tensor, hi: int, what: str) -> tf.Tensor:
  grid = tf.cast(grid, tf.int32)
  checks = [
      tf.debugging.assert_non_negative(grid, message=f"{what}: codes must be >= 0"),
      tf.debugging.assert_less(grid, tf.constant(hi, tf.int32),
                               message=f"{what}: codes must be < {hi} (the LM vocabulary's size "
                                       "for this modality; was the data tokenized with a larger "
                                       "codebook than the LM config's Vocabulary?)"),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(grid)


def tf_build(layout: Layout, codes: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """codes by segment name (tf int tensors of the segments' shapes) -> tokens int32 [L],
  loss_mask bool [L] (True at outputs), prefix_length int32 []."""
  missing = [n for n in layout.code_inputs if n not in codes]
  if missing:
    raise ValueError(f"{layout.task.value}: tf_build needs codes {list(layout.code_inputs)}; "
                     f"missing {missing}.")
  vocab = layout.vocab
  parts = []
  for s in layout.segments:
    if s.kind == "special":
      parts.append(tf.constant([s.token], tf.int32))
    elif s.kind == "text":
      parts.append(tf.fill([s.length], tf.constant(int(Special.TEXT_SLOT), tf.int32)))
    elif s.kind == "visual":
      grid = tf.ensure_shape(codes[s.name], s.shape)
      grid = _checked(grid, vocab.visual_codes, f"{layout.task.value}/{s.name}")
      parts.append(tf.reshape(grid, [-1]) + vocab.visual_offset)
    else:
      grid = tf.ensure_shape(codes[s.name], s.shape)                          # [levels, T]
      grid = _checked(grid, vocab.audio_codes_per_level, f"{layout.task.value}/{s.name}")
      offsets = (vocab.audio_offset
                 + vocab.audio_codes_per_level * np.arange(vocab.audio_levels)).astype(np.int32)
      parts.append(tf.reshape(grid + offsets[:, None], [-1]))
  tokens = tf.ensure_shape(tf.concat(parts, 0), [layout.length])
  return {"tokens": tokens,
          "loss_mask": tf.range(layout.length) >= layout.prefix_length,
          "prefix_length": tf.constant(layout.prefix_length, tf.int32)}


def tf_build_choice(layouts: Sequence[Layout], index: tf.Tensor,
                    codes_fn: Callable[[Layout], Mapping[str, tf.Tensor]]
                    ) -> dict[str, tf.Tensor]:
  """`tf_build(layouts[index], codes_fn(layouts[index]))` for a scalar int tensor `index`; all
  layouts must have the same length (one sequence length per task keeps AGD batches unpadded)."""
  lengths = {lay.length for lay in layouts}
  if len(lengths) != 1:
    raise ValueError(f"tf_build_choice: layouts have different lengths {sorted(lengths)}.")
  branches = [lambda lay=lay: tf_build(lay, codes_fn(lay)) for lay in layouts]
  index = tf.cast(index, tf.int32)
  # tf.switch_case runs the last branch for an out-of-range index; fail instead.
  check = tf.debugging.assert_less(
      index, len(layouts), message=f"tf_build_choice: index out of range for {len(layouts)} "
                                   "layouts")
  with tf.control_dependencies([check, tf.debugging.assert_non_negative(
      index, message="tf_build_choice: negative index")]):
    index = tf.identity(index)
  return tf.switch_case(index, branches)
