"""The sharded train loop shared by every model kind.

A model is anything built by `factory(rngs) -> nnx.Module` whose
`loss(batch, *, key, train, group) -> (scalar, metrics)` gives the loss of one optimizer group (see
`vp_jax.train.state.model_spec` for groups). The trainer owns everything else: sharded init or
restore, the jitted step (donated state), periodic eval, metric writers (TensorBoard + console), the
progress line, checkpoints with the data position, preemption and non-finite handling.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.checkpoint.manager import Checkpointer
from vp_jax.data.iterators import CheckpointableIterator
from vp_jax.parallel.rules import LogicalRules
from vp_jax.parallel.sharding import global_batch
from vp_jax.train import optim
from vp_jax.train import state as state_lib
from vp_jax.train.progress import Progress
from vp_jax.train.step import DTYPES, make_eval_step, make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  train_steps: int = 100
  # One optimizer per group; a single-group model uses "model".
  optimizers: Mapping[str, optim.OptimizerConfig] = dataclasses.field(
      default_factory=lambda: {"model": optim.OptimizerConfig()})
  grad_accum_steps: int = 1
  compute_dtype: str = "float32"    # "bfloat16": params cast for compute, fp32 master weights
  seed: int = 0
  log_every: int = 10
  eval_every: int = 0               # 0 disables periodic eval
  eval_batches: int = 1
  save_every: int = 100
  keep_checkpoints: int | None = 3  # keep the newest N ...
  keep_period: int | None = None    # ... and, forever, every step divisible by K
  async_checkpointing: bool = True
  max_consecutive_nonfinite: int = 5
  progress: bool = True
  # Group -> decay d of an exponential moving average of that group's params, updated after every
  # step (ema <- d * ema + (1 - d) * params) from the initial params, saved in the checkpoints and
  # preferred by the loaders (`Checkpointer.restore_parts`). MAGVIT's trainer
  # (google-research/magvit) keeps one for the generator at 0.999; the time constant 1 / (1 - d)
  # steps should be well below the run's length, or the average stays near the initial params.
  # Costs one more fp32 copy of the group's params (sharded like them) and an axpy a step.
  ema_decay: Mapping[str, float] = dataclasses.field(default_factory=dict)

  def validate(self) -> None:
    if self.train_steps < 1:
      raise ValueError(f"TrainerConfig.train_steps={self.train_steps} must be >= 1.")
    if self.compute_dtype not in DTYPES:
      raise ValueError(f"TrainerConfig.compute_dtype={self.compute_dtype!r}; known: "
                       f"{sorted(DTYPES)}.")
    for name in ("grad_accum_steps", "log_every", "save_every", "eval_batches",
                 "max_consecutive_nonfinite"):
      if getattr(self, name) < 1:
        raise ValueError(f"TrainerConfig.{name}={getattr(self, name)} must be >= 1.")
    for group, d in self.ema_decay.items():
      if not 0.0 < d < 1.0:
        raise ValueError(f"TrainerConfig.ema_decay[{group!r}]={d} must be in (0, 1).")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


@dataclasses.dataclass
class TrainResult:
  """What `Trainer.fit` returns: the final state, the logged losses and eval metrics by step."""
  state: state_lib.TrainState
  losses: dict[int, float]           # step number (1-based, after the update) -> loss
  eval_metrics: dict[int, dict[str, float]]
  start_step: int                    # the step training (re)started from
  preempted: bool = False


class _SigtermFlag:
  """Turns SIGTERM into a flag the loop checks (single process; under jax.distributed the
  preemption sync point is used instead, so all hosts save the same step)."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Trainer:
  """Trains any registered model (`optimizer_groups()` + `loss`) on a device mesh: one AdamW per
  optimizer group, updated in turn each step; Orbax checkpoints of the train state with the data
  iterator's position; resume, SIGTERM preemption, non-finite step skipping, eval and metrics.
  `fit` runs to `config.train_steps`; `close` waits for the last asynchronous save."""

  def __init__(self, factory: state_lib.ModelFactory, config: TrainerConfig,
               mesh: jax.sharding.Mesh, rules: LogicalRules, workdir: str | None = None,
               update_scales: Mapping[str, optim.UpdateScale] | None = None):
    """`update_scales`: per group, a per-parameter learning-rate multiplier
    (`optim.UpdateScale`)."""
    config.validate()
    self.config, self.mesh, self.rules, self.workdir = config, mesh, rules, workdir
    self.factory = factory
    self.spec = state_lib.model_spec(factory)
    missing = set(self.spec.groups) - set(config.optimizers)
    extra = set(config.optimizers) - set(self.spec.groups)
    if missing or extra:
      raise ValueError(f"TrainerConfig.optimizers has groups {sorted(config.optimizers)}, the "
                       f"model has {sorted(self.spec.groups)}.")
    update_scales = dict(update_scales or {})
    if set(config.ema_decay) - set(self.spec.groups):
      raise ValueError(f"TrainerConfig.ema_decay has groups {sorted(config.ema_decay)}, the model "
                       f"has {sorted(self.spec.groups)}.")
    if set(update_scales) - set(self.spec.groups):
      raise ValueError(f"Trainer: update_scales for groups {sorted(update_scales)}, the model has "
                       f"{sorted(self.spec.groups)}.")
    self.txs = {g: optim.make_optimizer(config.optimizers[g], config.train_steps,
                                        update_scales.get(g))
                for g in self.spec.groups}
    self.schedules = {g: optim.make_schedule(config.optimizers[g], config.train_steps)
                      for g in self.spec.groups}
    self.ema_groups = tuple(config.ema_decay)
    self.shardings = state_lib.train_state_shardings(factory, self.spec, self.txs, mesh, rules,
                                                     self.ema_groups)
    self.checkpointer = None if workdir is None else Checkpointer(
        f"{workdir}/checkpoints", keep=config.keep_checkpoints,
        keep_period=config.keep_period, async_save=config.async_checkpointing)
    step_fn = make_train_step(self.spec, self.txs, self.schedules,
                              grad_accum_steps=config.grad_accum_steps,
                              compute_dtype=config.compute_dtype, ema_decay=config.ema_decay)
    self._train_step = jax.jit(step_fn, donate_argnums=(0,),
                               out_shardings=(self.shardings, None))
    self._eval_step = jax.jit(make_eval_step(self.spec, config.compute_dtype))

  @contextlib.contextmanager
  def _context(self):
    with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
      yield

  def abstract_state(self) -> state_lib.TrainState:
    return state_lib.abstract_train_state(self.factory, self.spec, self.txs, self.shardings,
                                          self.ema_groups)

  def init_or_restore(self, data_iter: CheckpointableIterator | None = None
                      ) -> state_lib.TrainState:
    """The latest committed checkpoint in workdir (moving `data_iter` to its position), or a fresh
    sharded init."""
    if self.checkpointer is not None and self.checkpointer.latest_step() is not None:
      step = self.checkpointer.latest_step()
      state, data_state = self._restore(step)
      if data_iter is not None:
        data_iter.set_state(data_state)
      log.info("Restored step %d from %s", step, self.checkpointer.directory)
      return state
    return state_lib.create_train_state(self.factory, self.spec, self.txs, self.config.seed,
                                        self.shardings, self.ema_groups)

  def with_params(self, state: state_lib.TrainState, params: dict) -> state_lib.TrainState:
    """`state` with new params (e.g. inflated or converted weights, placed on `shardings.params`)
    and its weight averages restarted from them."""
    params = jax.device_put(params, self.shardings.params)
    return state.replace(params=params, ema={k: jax.tree.map(jnp.copy, params[k])
                                             for k in state.ema})

  def _restore(self, step: int) -> tuple[state_lib.TrainState, dict]:
    """Restores committed `step` whatever weight averages it kept: those this config keeps too are
    restored, one it does not keep yet starts from the restored params (`ema_decay` switched on
    in a resumed run, or a checkpoint written before the trainer kept averages), others are
    dropped."""
    abstract = self.abstract_state()
    saved = self.checkpointer.saved_ema_keys(step)
    target = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
              if f.name != "ema"}
    if saved is not None:
      target["ema"] = {k: abstract.params[k] for k in saved}
    restored, data_state = self.checkpointer.restore(target, step)
    kept = restored.pop("ema", {})
    started = [k for k in abstract.ema if k not in kept]
    if started:
      log.info("Step %d keeps no moving average of %s: starting it from the restored params.",
               step, started)
    restored["ema"] = {k: kept[k] if k in kept else jax.tree.map(jnp.copy, restored["params"][k])
                       for k in abstract.ema}
    return state_lib.TrainState(**restored), data_state

  def evaluate(self, state: state_lib.TrainState,
               eval_iter: CheckpointableIterator) -> dict[str, float]:
    """Mean of each metric over `config.eval_batches` batches."""
    totals: dict[str, float] = {}
    with self._context():
      for _ in range(self.config.eval_batches):
        metrics = jax.device_get(self._eval_step(state, self._device_batch(next(eval_iter))))
        for k, v in metrics.items():
          totals[k] = totals.get(k, 0.0) + float(v) / self.config.eval_batches
    return totals

  def _device_batch(self, batch):
    return global_batch(batch, self.mesh, self.rules)

  def step(self, state: state_lib.TrainState, batch: Mapping[str, np.ndarray]
           ) -> tuple[state_lib.TrainState, dict[str, Any]]:
    """One train step on a host-local batch. `state` is donated: use the returned one."""
    with self._context():
      return self._train_step(state, self._device_batch(batch))

  def fit(self, train_iter: CheckpointableIterator,
          eval_iter_fn: Callable[[], CheckpointableIterator] | None = None,
          stop_at: int | None = None) -> TrainResult:
    """Trains to `config.train_steps` (or `stop_at`, for tests), resuming from workdir if possible."""
    cfg = self.config
    state = self.init_or_restore(train_iter)
    start = int(jax.device_get(state.step))
    end = min(stop_at or cfg.train_steps, cfg.train_steps)
    writer = self._writer()
    progress = Progress(end, start, enabled=cfg.progress and jax.process_index() == 0)
    result = TrainResult(state, {}, {}, start)
    pending: tuple[int, Any] | None = None

    def drain(item):
      step, metrics = item
      metrics = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
      result.losses[step] = metrics["loss"] if "loss" in metrics else float(
          sum(v for k, v in metrics.items() if k.endswith("/loss")))
      if metrics["nonfinite_streak"] >= cfg.max_consecutive_nonfinite:
        raise NonFiniteError(
            f"{int(metrics['nonfinite_streak'])} consecutive steps (up to step {step}) had a "
            f"non-finite loss or gradient; their updates were skipped. Stopping "
            f"(TrainerConfig.max_consecutive_nonfinite={cfg.max_consecutive_nonfinite}). "
            f"Lower the learning rate, check the input data, or resume from a checkpoint.")
      if step % cfg.log_every == 0 or step == end:
        writer.write_scalars(step, metrics)
        progress.update(step, {k: metrics[k] for k in metrics if k.endswith("loss")},
                        force=step == end)

    with self._context(), _SigtermFlag() as sigterm:
      for step in range(start, end):
        state, metrics = self._train_step(state, self._device_batch(next(train_iter)))
        if pending is not None:
          drain(pending)
        pending = (step + 1, metrics)
        new_step = step + 1
        if self.checkpointer is not None:
          preempted = sigterm.raised or self.checkpointer.reached_preemption(new_step)
          if preempted or new_step % cfg.save_every == 0 or new_step == end:
            self.checkpointer.save(new_step, state, train_iter.get_state())
          if preempted:
            drain(pending)
            pending = None
            self.checkpointer.wait()
            log.warning("Preempted: saved step %d and stopped.", new_step)
            result.preempted = True
            break
        if eval_iter_fn is not None and cfg.eval_every and new_step % cfg.eval_every == 0:
          metrics_eval = self.evaluate(state, eval_iter_fn())
          result.eval_metrics[new_step] = metrics_eval
          writer.write_scalars(new_step, {f"eval/{k}": v for k, v in metrics_eval.items()})
      if pending is not None:
        drain(pending)
    if self.checkpointer is not None:
      self.checkpointer.wait()
    writer.flush()
    result.state = state
    return result

  def _writer(self):
    # Imported here, not at the top: clu's writers import TensorFlow (tens of seconds, and not
    # installed on an accelerator image that runs only `Trainer.step`, e.g. benchmarks/mfu.py).
    from clu import metric_writers
    if self.workdir is None or jax.process_index() > 0:
      return metric_writers.create_default_writer(None, just_logging=True)
    return metric_writers.create_default_writer(f"{self.workdir}/tensorboard")

  def close(self) -> None:
    if self.checkpointer is not None:
      self.checkpointer.close()
