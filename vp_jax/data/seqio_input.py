"""Batches from a registered seqio Task or Mixture, for the trainer.

Each process reads its own shard (seqio ShardInfo = process index / count) and batches its rows of
the global batch. The pipeline is deterministic (fixed shuffle seed), so the position saved in a
checkpoint is just the number of batches consumed (`TfDatasetIterator`).
"""
from __future__ import annotations

from typing import Mapping

import jax
import seqio

from vp_jax.data.iterators import TfDatasetIterator

# seqio decoder-only features -> the names vp_jax models read.
_RENAME = {"decoder_input_tokens": "inputs", "decoder_target_tokens": "targets",
           "decoder_loss_weights": "loss_mask"}


def seqio_lm_batches(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
                     batch_size: int, *, split: str = "train", shuffle: bool = True,
                     seed: int = 0, repeat: bool = True) -> TfDatasetIterator:
  """Decoder-only LM batches {inputs, targets, loss_mask} [local_batch, L] from seqio.

  With an "inputs" feature in `task_feature_lengths` each row is inputs then targets, and seqio's
  `decoder_causal_attention` (1 over the BOS and the inputs: the prefix a prefix LM would attend to
  bidirectionally) is dropped, so the batches carry no prefix mask. That is safe for the model
  trained on them today, the causal `ToyLM` (through `vp_jax.train.run.train`; the VideoPoet prefix
  LM has its own input pipeline, `vp_jax.train.run_lm`): `loss_mask` is 0 on the inputs part, so
  the inputs act as causal context only and the loss is the targets' alone. A model that needs the
  prefix mask must not read these batches.
  """
  count, index = jax.process_count(), jax.process_index()
  if batch_size % count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {count} processes.")
  try:
    seqio.get_mixture_or_task(mixture_or_task_name)
  except ValueError as e:
    raise ValueError(f"MIXTURE_OR_TASK_NAME={mixture_or_task_name!r} is not registered "
                     f"(did you import its module, e.g. vp_jax.tasks?): {e}") from e

  def make_dataset():
    ds = seqio.get_dataset(
        mixture_or_task_name, dict(task_feature_lengths), dataset_split=split, shuffle=shuffle,
        seed=seed, num_epochs=None if repeat else 1,
        shard_info=seqio.ShardInfo(index=index, num_shards=count),
        feature_converter=seqio.DecoderFeatureConverter(pack=False))
    ds = ds.map(lambda x: {_RENAME[k]: v for k, v in x.items() if k in _RENAME})
    return ds.batch(batch_size // count, drop_remainder=True)

  return TfDatasetIterator(make_dataset)
