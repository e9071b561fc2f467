"""Task sampling rates that change during training, and the per-step draw of a task.

seqio Mixtures have fixed rates. VideoPoet's pretraining changes them once (paper 4.2: 90% image /
10% video for the first 25% of steps, then 10% / 90%), so the schedule lives here, in the sampler:
a `RateSchedule` is a list of stages, each a start fraction of the run and fixed rates per seqio
task, and `draw_task(schedule, step, total_steps, seed)` picks the task of one step. The draw is a
pure function of (seed, step): every process picks the same task, and a resumed run the same
sequence. A schedule is registered under a name (`register_schedule`), next to one seqio Mixture
per stage (`{name}_stage{i}`), so a fixed-rate stage can also be used anywhere seqio is.

`schedule_for(name)` turns any name into a schedule: a registered schedule, a seqio Mixture (one
stage, the mixture's rates) or a Task (one stage, rate 1).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import seqio


@dataclasses.dataclass(frozen=True)
class Stage:
  start_fraction: float              # of total train steps, in [0, 1)
  rates: Mapping[str, float]         # seqio task name -> rate (normalized when drawing)


@dataclasses.dataclass(frozen=True)
class RateSchedule:
  stages: tuple[Stage, ...]

  def __post_init__(self):
    if not self.stages or self.stages[0].start_fraction != 0.0:
      raise ValueError(f"RateSchedule: the first stage must start at 0.0, got {self.stages}.")
    starts = [s.start_fraction for s in self.stages]
    if starts != sorted(set(starts)) or starts[-1] >= 1.0:
      raise ValueError(f"RateSchedule: stage starts {starts} must increase within [0, 1).")
    for s in self.stages:
      if not s.rates or any(r < 0 for r in s.rates.values()) or sum(s.rates.values()) <= 0:
        raise ValueError(f"RateSchedule: stage rates {dict(s.rates)} must be >= 0 with a "
                         "positive sum.")

  @property
  def tasks(self) -> tuple[str, ...]:
    """Every task with a positive rate in some stage, in first-seen order."""
    seen: dict[str, None] = {}
    for s in self.stages:
      seen.update({t: None for t, r in s.rates.items() if r > 0})
    return tuple(seen)

  def stage_index(self, step: int, total_steps: int) -> int:
    """The stage of 0-based `step`: the last one with start_fraction * total_steps <= step."""
    index = 0
    for i, s in enumerate(self.stages):
      if s.start_fraction * total_steps <= step:
        index = i
    return index

  def rates_at(self, step: int, total_steps: int) -> dict[str, float]:
    """Normalized rates of the tasks at `step` (those with rate > 0)."""
    rates = self.stages[self.stage_index(step, total_steps)].rates
    total = sum(rates.values())
    return {t: r / total for t, r in rates.items() if r > 0}


def draw_task(schedule: RateSchedule, step: int, total_steps: int, seed: int) -> str:
  """The task of `step`: a draw from the rates at that step, a pure function of (seed, step)."""
  rates = schedule.rates_at(step, total_steps)
  names = list(rates)
  rng = np.random.default_rng([seed, step, 0x6167])
  return names[int(rng.choice(len(names), p=np.array([rates[n] for n in names])))]


_SCHEDULES: dict[str, RateSchedule] = {}


def _stage_names(name: str, schedule: RateSchedule) -> list[str]:
  return [name] if len(schedule.stages) == 1 else [
      f"{name}_stage{i}" for i in range(len(schedule.stages))]


def register_schedule(name: str, schedule: RateSchedule, *, overwrite: bool = False) -> None:
  """Registers `name` (for `schedule_for`) and a seqio Mixture `{name}_stage{i}` per stage (or
  `name` itself for a one-stage schedule). Overwriting removes the old schedule's Mixtures; a
  failed registration (e.g. an unknown task) leaves neither the schedule nor any Mixture."""
  if name in _SCHEDULES and not overwrite:
    raise ValueError(f"schedule {name!r} is already registered.")
  stage_names = _stage_names(name, schedule)
  if overwrite:
    old = _SCHEDULES.pop(name, None)
    for mix in {*stage_names, *(_stage_names(name, old) if old else ())}:
      seqio.MixtureRegistry.remove(mix)
  added = []
  try:
    for mix, stage in zip(stage_names, schedule.stages):
      seqio.MixtureRegistry.add(mix, [(t, float(r)) for t, r in stage.rates.items() if r > 0])
      added.append(mix)
  except Exception:
    for mix in added:
      seqio.MixtureRegistry.remove(mix)
    raise
  _SCHEDULES[name] = schedule


def is_registered(name: str) -> bool:
  """Whether `register_schedule` holds a schedule called `name`."""
  return name in _SCHEDULES


def schedule_for(name: str) -> RateSchedule:
  """A registered schedule, or a seqio Mixture/Task as a one-stage schedule."""
  if name in _SCHEDULES:
    return _SCHEDULES[name]
  try:
    provider = seqio.get_mixture_or_task(name)
  except ValueError as e:
    raise ValueError(f"{name!r} is neither a registered schedule, mixture nor task (did you "
                     f"register the tasks, e.g. with vp_jax.tasks.videopoet?): {e}") from e
  if isinstance(provider, seqio.Mixture):
    return RateSchedule((Stage(0.0, {t.name: provider.get_rate(t) for t in provider.tasks}),))
  return RateSchedule((Stage(0.0, {name: 1.0}),))
