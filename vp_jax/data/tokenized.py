"""Reading the tokenization job's output back as a tf.data.Dataset (what the seqio tasks consume).

    ds = read_tokenized("/data/tok/syn_32_17")          # dicts of tensors, shapes from the manifest
    manifest = load_manifest("/data/tok/syn_32_17")

Token features come back as int32 in their latent shapes (`video_tokens` [T', H', W'],
`audio_tokens` [4, Ta] (-1 where `has_audio` is False), ...), `text_embeddings` as float32 [64, D]
(stored as the manifest's `config.text_dtype`, float16 by default), `text_mask` as bool [64],
strings as tf.string. See docs/data_format.md.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from vp_jax.data.tokenize import features as features_lib
from vp_jax.data.tokenize.shards import MANIFEST_FILE


def load_manifest(path: str) -> dict[str, Any]:
  file = os.path.join(path, MANIFEST_FILE)
  if not tf.io.gfile.exists(file):
    raise FileNotFoundError(f"{path}: no {MANIFEST_FILE} (not a finished tokenized dataset; rerun "
                            "the tokenization job to finish it).")
  with tf.io.gfile.GFile(file) as f:
    manifest = json.loads(f.read())
  if manifest.get("format_version") != features_lib.FORMAT_VERSION:
    raise ValueError(f"{file}: format_version {manifest.get('format_version')}, this reader "
                     f"expects {features_lib.FORMAT_VERSION}.")
  return manifest


def read_tokenized(path: str, *, shuffle_files: bool = False, seed: int | None = None,
                   num_parallel_reads: int | None = None,
                   shard_index: int = 0, num_shards: int = 1) -> tf.data.Dataset:
  """Dataset of per-clip dicts; file order is the shard order unless `shuffle_files`.

  `shard_index`/`num_shards` split the files between input processes (seqio ShardInfo).
  """
  manifest = load_manifest(path)
  files = [os.path.join(path, name) for name in manifest["shards"]]
  files = files[shard_index::num_shards]
  if not files:
    raise ValueError(f"{path}: no files for input shard {shard_index} of {num_shards} "
                     f"({manifest['num_shards']} files).")
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle_files:
    ds = ds.shuffle(len(files), seed=seed)
  if num_parallel_reads and num_parallel_reads > 1:
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=num_parallel_reads,
                       num_parallel_calls=num_parallel_reads, deterministic=True)
  else:
    ds = ds.flat_map(tf.data.TFRecordDataset)
  spec = features_lib.feature_spec(manifest)
  shapes = manifest["shapes"]
  text_dtype = tf.as_dtype(features_lib.text_storage_dtype(manifest))

  def parse(record):
    x = tf.io.parse_single_example(record, spec)
    out = {}
    for key, value in x.items():
      if key.endswith("_tokens"):
        out[key] = tf.reshape(tf.cast(value, tf.int32), shapes[key])
      elif key == "text_mask":
        out[key] = tf.cast(value, tf.bool)
      elif key == "text_embeddings":
        emb = tf.io.decode_raw(value, text_dtype)
        out[key] = tf.cast(tf.reshape(emb, shapes[key]), tf.float32)
      elif key in ("has_audio",):
        out[key] = tf.cast(value[0], tf.bool)
      elif value.dtype == tf.int64:
        out[key] = tf.cast(value[0], tf.int32)
      else:
        out[key] = value
    return out

  return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
