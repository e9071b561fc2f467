"""The tokenization job as an Apache Beam pipeline (DirectRunner locally, any runner at scale).

    tokenize_dataset_beam(source, make_tokenizers, "gs://bucket/tok/train",
                          pipeline_options=PipelineOptions(runner="DataflowRunner", ...))

The work items are the unfinished shard indices; each worker loads the tokenizers once
(`make_tokenizers`, a picklable zero-argument callable, runs in `DoFn.setup`) and writes whole shards
with the same `shards.write_shard` the in-process runner uses, so both produce identical bytes and
share the resume rule. The driver writes the manifest after the pipeline finishes. Each shard logs a
line with its clips/s, and the Beam counter `tokenize/clips` counts progress on the runner's UI.

Needs the `beam` extra (`pip install -c constraints.txt -e ".[beam]"`).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from vp_jax.data.tokenize import features as features_lib
from vp_jax.data.tokenize import runner, shards

log = logging.getLogger(__name__)


def _beam():
  try:
    import apache_beam as beam
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("tokenize_dataset_beam needs Apache Beam: pip install -c constraints.txt "
                      "-e '.[beam]' (apache-beam==2.77.0), or use the in-process runner "
                      "vp_jax.data.tokenize.runner.tokenize_dataset.") from e
  return beam


def _make_dofn(beam):

  class WriteShard(beam.DoFn):
    """index -> writes shard `index`, yields its sidecar."""

    def __init__(self, plan, source, make_tokenizers, config, stylization, structure_estimator):
      self.plan, self.source, self.make_tokenizers = plan, source, make_tokenizers
      self.config, self.stylization = config, stylization
      self.structure_estimator = structure_estimator
      self.clips = beam.metrics.Metrics.counter("tokenize", "clips")
      self.shards_done = beam.metrics.Metrics.counter("tokenize", "shards")

    def setup(self):
      self.tokenizers = self.make_tokenizers()

    def process(self, index):
      t0 = time.perf_counter()
      sidecar = shards.write_shard(
          self.plan, index, self.source, self.tokenizers, self.config,
          stylization=self.stylization, structure_estimator=self.structure_estimator,
          on_batch=self.clips.inc)
      self.shards_done.inc()
      dt = time.perf_counter() - t0
      log.info("tokenize shard %d/%d: %d clips, %.2f clips/s", index + 1, self.plan.num_shards,
               sidecar["count"], sidecar["count"] / max(dt, 1e-9))
      yield sidecar

  return WriteShard


def tokenize_dataset_beam(source, make_tokenizers: Callable[[], features_lib.Tokenizers],
                          out_dir: str,
                          config: features_lib.TokenizeConfig = features_lib.TokenizeConfig(), *,
                          pipeline_options=None, structure_estimator: Callable | None = None,
                          tokenizer_records: dict[str, Any] | None = None) -> dict[str, Any]:
  """Runs the job with Beam; returns the manifest. Finished shards of a previous run are kept.

  `tokenizer_records` (checkpoint/version of each tokenizer, for job.json and the manifest) defaults
  to describing `make_tokenizers()` in the driver; pass it explicitly to avoid loading the
  tokenizers there.
  """
  beam = _beam()
  from apache_beam.options.pipeline_options import PipelineOptions

  stylization = runner.resolve_stylization(source, config, structure_estimator)
  if tokenizer_records is None:
    tokenizer_records = runner.tokenizer_records(make_tokenizers())
  plan = shards.make_plan(out_dir, source, config, tokenizer_records, stylization=stylization)
  pending = sorted(set(range(plan.num_shards)) - shards.finished_shards(plan))
  log.info("tokenize (beam): %d of %d shards to write", len(pending), plan.num_shards)
  if pending:
    options = pipeline_options or PipelineOptions(runner="DirectRunner")
    write = _make_dofn(beam)(plan, source, make_tokenizers, config, stylization,
                             structure_estimator)
    with beam.Pipeline(options=options) as p:
      _ = (p | "Shards" >> beam.Create(pending)
             | "Spread" >> beam.Reshuffle()
             | "Tokenize" >> beam.ParDo(write))
  manifest = shards.write_manifest(plan)
  manifest["resumed_shards"] = plan.num_shards - len(pending)
  return manifest
