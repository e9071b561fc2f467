"""`train(...)`: the top-level training function that `launch/train.py` configures with gin.

Plain keyword arguments, no gin inside: everything a run needs (model config, trainer config, mesh,
logical axis rules, data) is an argument, so it is equally callable from Python.
"""
from __future__ import annotations

import importlib
import logging
import time
from typing import Any, Mapping, Sequence

import jax

from vp_jax.data.seqio_input import seqio_lm_batches
from vp_jax.models import registry
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules
from vp_jax.train.trainer import Trainer, TrainerConfig, TrainResult

log = logging.getLogger(__name__)


def train(*, model_dir: str, model: Any, trainer: TrainerConfig, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], batch_size: int,
          mesh: MeshConfig = MeshConfig(), logical_axis_rules: str | Sequence = "default",
          eval_split: str | None = "validation",
          task_modules: Sequence[str] = ("vp_jax.tasks",)) -> TrainResult:
  """Trains `model` (a registered model config) on a seqio task/mixture, checkpointing to
  `model_dir`; resumes from the latest checkpoint there."""
  for name in task_modules:
    importlib.import_module(name)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  mesh_ = make_mesh(mesh)
  rules = get_rules(logical_axis_rules)
  runner = Trainer(registry.factory(model), trainer, mesh_, rules, workdir=model_dir)
  train_iter = seqio_lm_batches(mixture_or_task_name, task_feature_lengths, batch_size,
                                seed=trainer.seed)
  eval_fn = None
  if eval_split and trainer.eval_every:
    eval_fn = lambda: seqio_lm_batches(mixture_or_task_name, task_feature_lengths, batch_size,
                                       split=eval_split, shuffle=False)
  t0 = time.perf_counter()
  try:
    result = runner.fit(train_iter, eval_fn)
  finally:
    runner.close()
  steps = sorted(result.losses)
  if jax.process_index() == 0 and steps:
    print(f"Trained {type(model).__name__} on {mixture_or_task_name!r}: steps {result.start_step}"
          f" -> {steps[-1]} in {time.perf_counter() - t0:.1f} s on {jax.device_count()} "
          f"device(s) (mesh {dict(mesh_.shape)}); loss {result.losses[steps[0]]:.4f} -> "
          f"{result.losses[steps[-1]]:.4f}; checkpoints in {model_dir}/checkpoints"
          + (" (stopped early: preempted)" if result.preempted else ""), flush=True)
  return result
