"""Checkpoints of (train state, data iterator position) with Orbax's CheckpointManager.

Saves are asynchronous; retention is keep-the-last-N plus keep-every-K; restore goes to the latest
committed step (or an explicit one) onto whatever shardings the caller gives, so a run saved on 8
devices restores onto 4 or 1. A step is committed once Orbax has finalized it (the step directory,
renamed from its temporary name, holding `_CHECKPOINT_METADATA` and every item); anything else is
reported as partial with the path, never silently skipped over when asked for explicitly.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

STATE, DATA = "state", "data"
COMMIT_MARKER = "_CHECKPOINT_METADATA"
# Which copy of the params `restore_parts` loads: the trained ones, their moving averages
# (`TrainerConfig.ema_decay`), or the average where the checkpoint holds one.
WEIGHTS = ("auto", "ema", "params")


class CheckpointError(RuntimeError):
  """A checkpoint is missing, partial or does not match the model being restored."""


class Checkpointer:
  """Saves and restores `TrainState` plus the data iterator state under `directory`."""

  def __init__(self, directory: str | os.PathLike, *, keep: int | None = 3,
               keep_period: int | None = None, async_save: bool = True, create: bool = True):
    if "://" not in str(directory):   # local paths: Orbax requires them absolute
      directory = os.path.abspath(directory)
    self.directory = epath.Path(directory)
    if not create and not self.directory.exists():
      raise CheckpointError(f"Checkpoint directory {self.directory} does not exist.")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_period,
        enable_async_checkpointing=async_save, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA))

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed step, or None. Steps still being written are not counted."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict[str, Any]) -> bool:
    """Starts an asynchronous save of `step` (the caller decides when to save)."""
    return self.manager.save(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state)}),
        force=True)

  def reached_preemption(self, step: int) -> bool:
    """True at the multi-host preemption sync point (under jax.distributed); False otherwise."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def _check_committed(self, step: int) -> epath.Path:
    path = self.directory / str(step)
    if step not in self.manager.all_steps():
      partial = [p.name for p in self.directory.iterdir() if p.name.startswith(f"{step}.")] \
          if self.directory.exists() else []
      hint = f" (an unfinished write exists: {partial})" if partial else ""
      raise CheckpointError(f"No committed checkpoint for step {step} in {self.directory}"
                            f"{hint}; committed steps: {self.all_steps()}.")
    missing = [name for name in (COMMIT_MARKER, STATE, DATA) if not (path / name).exists()]
    if missing:
      raise CheckpointError(f"Checkpoint {path} is partial: missing {missing}. Delete it or "
                            f"restore another step ({self.all_steps()}).")
    return path

  def _committed_or_latest(self, step: int | None) -> tuple[int, epath.Path]:
    """(step, its directory): `step` if committed (else a CheckpointError naming what is wrong),
    or the latest committed step when None."""
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f"No committed checkpoint in {self.directory}.")
    return step, self._check_committed(step)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores (state, data_state) at `step` (default: latest) onto `abstract_state`'s shardings.

    `abstract_state` is a tree of `jax.ShapeDtypeStruct` with `.sharding` set; the checkpoint may
    have been written under any mesh or device count.
    """
    step, path = self._committed_or_latest(step)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          **{STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore()}))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"Checkpoint {path} does not match the model being restored: {e}") from e
    _check_shapes(restored[STATE], abstract_state, path)
    return restored[STATE], restored[DATA]


  def restore_parts(self, target: dict[str, Any], step: int | None = None,
                    weights: str = "auto") -> tuple[dict[str, Any], int, list[str]]:
    """Restores only the named top-level fields of the saved train state, e.g.
    `{"params": abstract pure dict}`, at `step` (default: latest) onto the target's shardings:
    what inference needs, without the optimizer state or the optimizer config that shaped it.

    `weights` picks what fills each top-level key of `target["params"]`: "params" the trained
    weights; "ema" their moving average (a CheckpointError if the checkpoint keeps none for a
    key); "auto" the average where the checkpoint keeps one, else the trained weights (the
    average is what MAGVIT's and most GAN trainers evaluate). The result names them "params"
    either way. Returns (restored fields, step, the keys of `target["params"]` that hold the
    average)."""
    if weights not in WEIGHTS:
      raise ValueError(f"restore_parts: weights={weights!r}; use one of {WEIGHTS}.")
    step, path = self._committed_or_latest(step)
    request, from_ema = dict(target), []
    if "params" in target and weights != "params":
      saved_ema = self.saved_ema_keys(step) or []
      from_ema = [k for k in target["params"] if k in saved_ema]
      missing = [k for k in target["params"] if k not in saved_ema]
      if weights == "ema" and missing:
        raise CheckpointError(f"Checkpoint {path} keeps no moving average of params {missing} "
                              f"(averaged: {sorted(saved_ema)}); train with TrainerConfig."
                              f"ema_decay or load weights='params'.")
      if from_ema:
        request["ema"] = {k: target["params"][k] for k in from_ema}
        request["params"] = {k: target["params"][k] for k in missing}
    request = {k: v for k, v in request.items() if v}
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
          item=request, restore_args=ocp.checkpoint_utils.construct_restore_args(request),
          partial_restore=True)}))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"Checkpoint {path} does not hold {sorted(request)} matching the model: {e}") from e
    restored = dict(restored[STATE])
    if from_ema:
      restored["params"] = {**restored.get("params", {}), **restored.pop("ema")}
    _check_shapes(restored, target, path)
    return restored, step, from_ema

  def saved_ema_keys(self, step: int) -> list[str] | None:
    """The top-level param keys whose moving average committed `step` keeps ([] if none), or
    None when its state has no `ema` field (written before the trainer kept averages)."""
    path = self._check_committed(step)
    # the item handler reads the item's tree metadata directly (PyTreeCheckpointer().metadata
    # also looks for a step-level _CHECKPOINT_METADATA inside the item and logs a warning)
    tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path) / STATE)
    if tree is None or "ema" not in tree.keys():
      return None
    return sorted(tree["ema"].keys())


def _check_shapes(restored, abstract, path) -> None:
  def check(kp, r, a):
    if tuple(r.shape) != tuple(a.shape) or r.dtype != a.dtype:
      raise CheckpointError(
          f"Checkpoint {path}: {jax.tree_util.keystr(kp)} is {r.dtype}{list(r.shape)}, the model "
          f"expects {a.dtype}{list(a.shape)}.")
  jax.tree_util.tree_map_with_path(check, restored, abstract)
