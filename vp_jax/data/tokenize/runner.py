"""In-process runner of the tokenization job (small data, tests, the demo).

    manifest = tokenize_dataset(SyntheticSource(cfg), tokenizers, "/data/tok/synthetic_train")

Same shards, same bytes and same resume rule as the Beam pipeline (`beam_pipeline.py`): both call
`shards.write_shard` for each unfinished shard and `shards.write_manifest` at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from vp_jax.data.tokenize import features as features_lib
from vp_jax.data.tokenize import shards
from vp_jax.train.progress import Progress


def resolve_stylization(source, config: features_lib.TokenizeConfig,
                        structure_estimator: Callable | None) -> bool:
  if config.stylization is None:
    return bool(getattr(source, "has_structure", False) or structure_estimator is not None)
  if config.stylization and not (getattr(source, "has_structure", False) or structure_estimator):
    raise ValueError(f"stylization=True but the source {source.describe()} has no optical flow "
                     "and depth; pass a structure estimator or set stylization=False.")
  return bool(config.stylization)


def tokenizer_records(tok: features_lib.Tokenizers) -> dict[str, Any]:
  return {"video": features_lib.describe_component(tok.video),
          "audio": features_lib.describe_component(tok.audio),
          "text": features_lib.describe_component(tok.text)}


def tokenize_dataset(source, tokenizers: features_lib.Tokenizers, out_dir: str,
                     config: features_lib.TokenizeConfig = features_lib.TokenizeConfig(), *,
                     structure_estimator: Callable | None = None, progress: bool = True,
                     stream=None) -> dict[str, Any]:
  """Tokenizes every unfinished shard of `source` into out_dir; returns the manifest."""
  stylization = resolve_stylization(source, config, structure_estimator)
  plan = shards.make_plan(out_dir, source, config, tokenizer_records(tokenizers),
                          stylization=stylization)
  done = shards.finished_shards(plan)
  already = sum(plan.shard_range(i)[1] - plan.shard_range(i)[0] for i in done)
  bar = Progress(plan.num_examples, start=already, desc="tokenize", unit="clips",
                 stream=stream or sys.stderr, enabled=progress)
  state = {"clips": already}

  def on_batch(n: int) -> None:
    state["clips"] += n
    bar.update(state["clips"])

  t0 = time.perf_counter()
  for index in range(plan.num_shards):
    if index in done:
      continue
    shards.write_shard(plan, index, source, tokenizers, config, stylization=stylization,
                       structure_estimator=structure_estimator, on_batch=on_batch)
  bar.update(plan.num_examples, force=True)
  manifest = shards.write_manifest(plan)
  manifest["run_seconds"] = round(time.perf_counter() - t0, 3)
  manifest["resumed_shards"] = len(done)
  return manifest
