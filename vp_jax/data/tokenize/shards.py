"""Shards of the tokenization job: the plan, writing one shard atomically, the manifest.

Shard i holds examples [i * shard_size, (i + 1) * shard_size) of the source, so its bytes depend only
on (source, config, tokenizers, i) — any worker can write any shard, and a restarted job writes the
same bytes. A shard is written to a temporary name and renamed, then its sidecar
`<shard>.json` (count, shapes, features) is written; a shard is finished iff its sidecar exists. On
restart, finished shards are kept and the rest are (re)written; temporaries of a killed run are
overwritten. `job.json` holds a fingerprint of everything that determines the bytes; restarting into
a directory of a different job is an error instead of a silently mixed dataset. `manifest.json` is
written last, from the sidecars.

File operations go through tf.io.gfile, so the output may be a local path or gs://... on a cluster.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Callable

from vp_jax.data.tokenize import features as features_lib

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"


class JobMismatchError(RuntimeError):
  """The output directory holds shards of a different job."""


@dataclasses.dataclass(frozen=True)
class Plan:
  out_dir: str
  split: str
  num_examples: int
  num_shards: int
  shard_size: int
  fingerprint: str
  job: dict  # what the fingerprint covers (+ tokenizer records)

  def shard_name(self, index: int) -> str:
    return f"{self.split}.tfrecord-{index:05d}-of-{self.num_shards:05d}"

  def shard_path(self, index: int) -> str:
    return _join(self.out_dir, self.shard_name(index))

  def sidecar_path(self, index: int) -> str:
    return self.shard_path(index) + ".json"

  def shard_range(self, index: int) -> tuple[int, int]:
    if not 0 <= index < self.num_shards:
      raise IndexError(f"{self.out_dir}: shard {index} out of range; the plan has "
                       f"{self.num_shards} shards.")
    start = index * self.shard_size
    return start, min(start + self.shard_size, self.num_examples)


def _gfile():
  import tensorflow as tf
  return tf.io.gfile


def _join(a: str, b: str) -> str:
  return a.rstrip("/") + "/" + b


def _write_json(path: str, obj: Any) -> None:
  gfile = _gfile()
  tmp = path + ".tmp"
  with gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(obj, indent=1, sort_keys=True))
  gfile.rename(tmp, path, overwrite=True)


def _read_json(path: str) -> Any:
  with _gfile().GFile(path, "r") as f:
    return json.loads(f.read())


def make_plan(out_dir: str, source, config: features_lib.TokenizeConfig,
              tokenizer_records: dict[str, Any], *, stylization: bool) -> Plan:
  """Creates (or checks) job.json in out_dir and returns the shard plan."""
  n = len(source)
  if n == 0:
    raise ValueError(f"tokenize: source {source.describe()} is empty.")
  split = source.describe().get("split", "train")
  # The config's stylization may be None ("on iff the source can make it"); what changes the bytes
  # is the resolved value, recorded once as job["stylization"], so None and the explicit setting it
  # resolves to make the same job (and a resumed run may spell it either way).
  job_config = {k: v for k, v in config.output_affecting().items() if k != "stylization"}
  job = {"format_version": features_lib.FORMAT_VERSION, "source": source.describe(),
         "config": job_config, "stylization": stylization,
         "tokenizers": tokenizer_records}
  fingerprint = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
  gfile = _gfile()
  gfile.makedirs(out_dir)
  path = _join(out_dir, JOB_FILE)
  if gfile.exists(path):
    old = _read_json(path)
    if old.get("fingerprint") != fingerprint:
      raise JobMismatchError(
          f"{out_dir} holds shards of a different tokenization job (fingerprint "
          f"{old.get('fingerprint')} != {fingerprint}: source, config or tokenizers changed). "
          "Use a new output directory, or delete this one to start over.")
  else:
    _write_json(path, {"fingerprint": fingerprint, **job})
  num_shards = math.ceil(n / config.shard_size)
  return Plan(out_dir=out_dir, split=split, num_examples=n, num_shards=num_shards,
              shard_size=config.shard_size, fingerprint=fingerprint, job=job)


def finished_shards(plan: Plan) -> set[int]:
  gfile = _gfile()
  done = set()
  for i in range(plan.num_shards):
    if gfile.exists(plan.sidecar_path(i)) and gfile.exists(plan.shard_path(i)):
      done.add(i)
  return done


def write_shard(plan: Plan, index: int, source, tokenizers: features_lib.Tokenizers,
                config: features_lib.TokenizeConfig, *, stylization: bool,
                structure_estimator: Callable | None = None,
                on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Tokenizes shard `index` and writes it (atomically) plus its sidecar; returns the sidecar."""
  import tensorflow as tf
  gfile = _gfile()
  start, stop = plan.shard_range(index)
  t0 = time.perf_counter()
  tmp = plan.shard_path(index) + ".tmp"
  shapes: dict[str, list[int]] = {}
  keys: set[str] = set()
  count, with_audio, labelled = 0, 0, 0
  examples = source.read(start, stop)
  with tf.io.TFRecordWriter(tmp) as writer:
    batch: list[dict] = []

    def flush():
      nonlocal count, with_audio, labelled
      for f in features_lib.encode_batch(batch, tokenizers, config, stylization=stylization,
                                         structure_estimator=structure_estimator):
        shape = features_lib.shapes_of(f)
        for k, v in shape.items():
          if shapes.setdefault(k, v) != v:
            raise ValueError(f"{f['id']}: {k} has shape {v}, earlier examples {shapes[k]}.")
        keys.update(k for k, v in f.items() if v is not None)
        with_audio += int(bool(f.get("has_audio")))
        labelled += int(bool(f["labels"]))
        writer.write(features_lib.to_tf_example(f))
        count += 1
      if on_batch is not None:
        on_batch(len(batch))
      batch.clear()

    for ex in examples:
      batch.append(ex)
      if len(batch) == config.batch_size:
        flush()
    if batch:
      flush()
  if count != stop - start:
    raise RuntimeError(f"shard {index}: source gave {count} examples for range [{start}, {stop}).")
  gfile.rename(tmp, plan.shard_path(index), overwrite=True)
  sidecar = {"shard": plan.shard_name(index), "range": [start, stop], "count": count,
             "with_audio": with_audio, "labelled": labelled, "shapes": shapes,
             "features": sorted(keys),
             "seconds": round(time.perf_counter() - t0, 3), "fingerprint": plan.fingerprint}
  _write_json(plan.sidecar_path(index), sidecar)
  return sidecar


def write_manifest(plan: Plan) -> dict[str, Any]:
  """Collects the sidecars into manifest.json (all shards must be finished)."""
  missing = sorted(set(range(plan.num_shards)) - finished_shards(plan))
  if missing:
    raise RuntimeError(f"{plan.out_dir}: shards {missing} are not finished; rerun the job.")
  sidecars = [_read_json(plan.sidecar_path(i)) for i in range(plan.num_shards)]
  shapes: dict[str, list[int]] = {}
  feats: set[str] = set()
  for s in sidecars:
    for k, v in s["shapes"].items():
      if shapes.setdefault(k, v) != v:
        raise ValueError(f"{plan.out_dir}: {k} has shape {v} in {s['shard']} but {shapes[k]} "
                         "elsewhere.")
    feats.update(s["features"])
  manifest = {
      "format_version": features_lib.FORMAT_VERSION, "fingerprint": plan.fingerprint,
      "split": plan.split, "num_examples": sum(s["count"] for s in sidecars),
      "num_with_audio": sum(s["with_audio"] for s in sidecars),
      "num_shards": plan.num_shards, "shards": [s["shard"] for s in sidecars],
      "shapes": shapes, "features": sorted(feats),
      # label_* features exist iff every example has labels (the synthetic data).
      "has_labels": all(s["labelled"] == s["count"] for s in sidecars),
      "token_counts": {k: int(math.prod(v)) for k, v in shapes.items() if k.endswith("_tokens")},
      "source": plan.job["source"], "config": plan.job["config"],
      "stylization": "stylization_tokens" in feats, "tokenizers": plan.job["tokenizers"],
      "tokenize_seconds": round(sum(s["seconds"] for s in sidecars), 3),
  }
  _write_json(_join(plan.out_dir, MANIFEST_FILE), manifest)
  return manifest

