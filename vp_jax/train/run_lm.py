"""`train_lm(...)`: trains the VideoPoet prefix LM on a task mixture with AGD batching.

The prefix-LM counterpart of `vp_jax.train.run.train` (whose seqio decoder-only feature converter
does not carry prefix lengths, loss masks or text embeddings): it registers the VideoPoet tasks of
the tokenized datasets it is given (`tokenized_data`, with the model's vocabulary), turns the
mixture or schedule name into per-step task rates (`vp_jax.data.mixing.schedule_for`), feeds the
shared `Trainer` unpadded single-task batches from `vp_jax.data.agd.AGDIterator` (its position is
saved with every checkpoint) and prints what it did, including the padding ratio. Configured with
gin by `launch/train_lm.py` + `gin/videopoet_lm.gin`; plain keyword arguments, callable from Python.
"""
from __future__ import annotations

import importlib
import math
import time
from typing import Mapping, Sequence

import jax
import seqio

from vp_jax.data.agd import AGDIterator
from vp_jax.data.mixing import schedule_for
from vp_jax.models import registry
from vp_jax.models.prefix_lm import model as _prefix_lm_model  # noqa: F401  (registers the LM)
from vp_jax.models.prefix_lm.config import PrefixLMConfig
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules
from vp_jax.parallel.sharding import batch_ways
from vp_jax.train.trainer import Trainer, TrainerConfig, TrainResult


def task_datasets(split: str, *, shuffle: bool, seed: int, shuffle_buffer_size: int | None = None):
  """task name -> that task's repeated, deterministic LM examples (this process's shard).

  `shuffle_buffer_size` examples are buffered per task (seqio's default when None); at paper
  scale one example holds ~0.5 MB of text embeddings, so keep it moderate with many tasks."""
  shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())

  def dataset_fn(task: str):
    return seqio.get_mixture_or_task(task).get_dataset(
        sequence_length=None, split=split, shuffle=shuffle, seed=seed, num_epochs=None,
        shard_info=shard, use_cached=False, shuffle_buffer_size=shuffle_buffer_size)

  return dataset_fn


def train_lm(*, model_dir: str, model: PrefixLMConfig, trainer: TrainerConfig,
             mixture_or_task_name: str, batch_size: int | None = None,
             tokens_per_batch: int | None = None,
             tokenized_data: Mapping[str, str | Mapping[str, str]] | None = None,
             task_prefix: str = "vp",
             mesh: MeshConfig = MeshConfig(), logical_axis_rules: str | Sequence = "default",
             split: str = "train", eval_split: str | None = None,
             shuffle_buffer_size: int | None = 256,
             task_modules: Sequence[str] = ("vp_jax.tasks",)) -> TrainResult:
  """Trains `model` on `mixture_or_task_name` (a task, seqio mixture or registered schedule).

  `tokenized_data` ({dataset name: tokenized dir}) registers tasks `{task_prefix}_{dataset}_...`
  and mixtures `{task_prefix}_{t2v,t2v_i,ssl,no_t2i,all,pretrain,adapt_*}` first (see
  vp_jax/tasks/videopoet_mixtures.py). One of `batch_size` (rows, every group) and
  `tokens_per_batch` (rows = tokens / length, per group) sets the global batch."""
  if not isinstance(model, PrefixLMConfig):
    raise ValueError(f"train_lm: model must be a PrefixLMConfig, got {type(model).__name__}.")
  for name in task_modules:
    importlib.import_module(name)
  if tokenized_data:
    from vp_jax.tasks.videopoet_mixtures import register_videopoet
    reg = register_videopoet(dict(tokenized_data), vocab=model.vocab, prefix=task_prefix,
                             overwrite=True)
    if jax.process_index() == 0:
      for mix, status in reg.mixtures.items():
        print(f"mixture {mix}: {status}", flush=True)
  schedule = schedule_for(mixture_or_task_name)
  for task in schedule.tasks:
    size = seqio.get_mixture_or_task(task).output_features["tokens"].vocabulary.vocab_size
    if size != model.vocab.size:
      raise ValueError(f"task {task!r} makes ids for a vocabulary of {size}, the model has "
                       f"{model.vocab.size} (register the tasks with the model's vocab).")
  mesh_ = make_mesh(mesh)
  rules = get_rules(logical_axis_rules)
  ways = batch_ways(mesh_, rules)
  common = dict(total_steps=trainer.train_steps, seed=trainer.seed, batch_size=batch_size,
                tokens_per_batch=tokens_per_batch,
                batch_multiple=math.lcm(ways, jax.process_count()),
                process_count=jax.process_count())
  train_iter = AGDIterator(schedule, task_datasets(split, shuffle=True, seed=trainer.seed,
                                         shuffle_buffer_size=shuffle_buffer_size),
                           **common)
  eval_fn = None
  if eval_split and trainer.eval_every:
    eval_fn = lambda: AGDIterator(schedule, task_datasets(eval_split, shuffle=False, seed=0),
                                  **common)
  runner = Trainer(registry.factory(model), trainer, mesh_, rules, workdir=model_dir)
  t0 = time.perf_counter()
  try:
    result = runner.fit(train_iter, eval_fn)
  finally:
    runner.close()
  steps = sorted(result.losses)
  if jax.process_index() == 0 and steps:
    stats = train_iter.stats()
    print(f"Trained the prefix LM on {mixture_or_task_name!r}: steps {result.start_step} -> "
          f"{steps[-1]} in {time.perf_counter() - t0:.1f} s on {jax.device_count()} device(s); "
          f"loss {result.losses[steps[0]]:.4f} -> {result.losses[steps[-1]]:.4f}; padding ratio "
          f"{stats['padding_ratio']:.3f}; batches per task/length {stats['batches']}; "
          f"checkpoints in {model_dir}/checkpoints"
          + (" (stopped early: preempted)" if result.preempted else ""), flush=True)
  return result
