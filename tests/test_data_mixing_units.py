"""`register_schedule` on its own, with three throwaway seqio tasks: the schedule `schedule_for`
returns, the seqio Mixture per stage with that stage's positive rates (or the name itself for one
stage), refusal to register twice, overwriting (including a different number of stages, which must
leave no stale Mixture), and a failed registration leaving nothing behind."""
import pytest
import seqio
import tensorflow as tf

from vp_jax.data import mixing
from vp_jax.data.mixing import RateSchedule, Stage, register_schedule, schedule_for

TASKS = ("mixu_a", "mixu_b", "mixu_c")
NAMES = ("mixu_one", "mixu_two", "mixu_bad", "mixu_grow", "mixu_shrink")


def _dataset(split, shuffle_files):
  del split, shuffle_files
  return tf.data.Dataset.range(2)


@pytest.fixture(autouse=True)
def _registries(monkeypatch):
  monkeypatch.setattr(mixing, "_SCHEDULES", {})
  for t in TASKS:
    seqio.TaskRegistry.remove(t)
    seqio.TaskRegistry.add(t, source=seqio.FunctionDataSource(_dataset, splits=["train"]),
                           output_features={})
  yield
  for name in NAMES:
    for mix in (name, *(f"{name}_stage{i}" for i in range(3))):
      seqio.MixtureRegistry.remove(mix)
  for t in TASKS:
    seqio.TaskRegistry.remove(t)


def _rates(mixture_name):
  """{task: rate} of a registered seqio Mixture."""
  mix = seqio.MixtureRegistry.get(mixture_name)
  return {t.name: mix.get_rate(t) for t in mix.tasks}


def _is_mixture(name):
  return name in seqio.MixtureRegistry.names()


def _one_stage(rates):
  return RateSchedule((Stage(0.0, rates),))


def test_one_stage_schedule_is_a_mixture_under_its_own_name():
  sched = _one_stage({"mixu_a": 3.0, "mixu_b": 1.0, "mixu_c": 0.0})
  register_schedule("mixu_one", sched)
  assert schedule_for("mixu_one") is sched
  assert _rates("mixu_one") == {"mixu_a": 3.0, "mixu_b": 1.0}     # zero-rate task left out
  assert not _is_mixture("mixu_one_stage0")


def test_multi_stage_schedule_has_one_mixture_per_stage():
  sched = RateSchedule((Stage(0.0, {"mixu_a": 1.0}), Stage(0.25, {"mixu_b": 2.0, "mixu_c": 2.0}),
                        Stage(0.5, {"mixu_a": 0.0, "mixu_c": 5.0})))
  register_schedule("mixu_two", sched)
  assert schedule_for("mixu_two") is sched
  assert _rates("mixu_two_stage0") == {"mixu_a": 1.0}
  assert _rates("mixu_two_stage1") == {"mixu_b": 2.0, "mixu_c": 2.0}
  assert _rates("mixu_two_stage2") == {"mixu_c": 5.0}
  assert not _is_mixture("mixu_two")
  assert schedule_for("mixu_two").rates_at(30, 100) == {"mixu_b": 0.5, "mixu_c": 0.5}


def test_registering_twice_needs_overwrite():
  first = _one_stage({"mixu_a": 1.0})
  register_schedule("mixu_one", first)
  with pytest.raises(ValueError) as e:
    register_schedule("mixu_one", _one_stage({"mixu_b": 1.0}))
  assert str(e.value) == "schedule 'mixu_one' is already registered."
  assert schedule_for("mixu_one") is first and _rates("mixu_one") == {"mixu_a": 1.0}
  second = _one_stage({"mixu_b": 4.0, "mixu_c": 1.0})
  register_schedule("mixu_one", second, overwrite=True)
  assert schedule_for("mixu_one") is second
  assert _rates("mixu_one") == {"mixu_b": 4.0, "mixu_c": 1.0}


def test_overwrite_with_another_number_of_stages_leaves_no_stale_mixture():
  register_schedule("mixu_grow", _one_stage({"mixu_a": 1.0}))
  two = RateSchedule((Stage(0.0, {"mixu_b": 1.0}), Stage(0.5, {"mixu_c": 1.0})))
  register_schedule("mixu_grow", two, overwrite=True)
  assert schedule_for("mixu_grow") is two
  assert _rates("mixu_grow_stage0") == {"mixu_b": 1.0}
  assert _rates("mixu_grow_stage1") == {"mixu_c": 1.0}
  assert not _is_mixture("mixu_grow")            # the old one-stage Mixture is gone
  register_schedule("mixu_shrink", two)
  register_schedule("mixu_shrink", _one_stage({"mixu_a": 2.0}), overwrite=True)
  assert _rates("mixu_shrink") == {"mixu_a": 2.0}
  assert not _is_mixture("mixu_shrink_stage0") and not _is_mixture("mixu_shrink_stage1")


def test_a_failed_registration_leaves_nothing_registered():
  bad = RateSchedule((Stage(0.0, {"mixu_a": 1.0}), Stage(0.5, {"mixu_nope": 1.0})))
  with pytest.raises(ValueError, match="mixu_nope"):
    register_schedule("mixu_bad", bad)
  assert not _is_mixture("mixu_bad_stage0") and not _is_mixture("mixu_bad_stage1")
  with pytest.raises(ValueError, match="neither a registered schedule"):
    schedule_for("mixu_bad")
  # The name is still free: the corrected schedule registers without overwrite.
  good = RateSchedule((Stage(0.0, {"mixu_a": 1.0}), Stage(0.5, {"mixu_b": 1.0})))
  register_schedule("mixu_bad", good)
  assert schedule_for("mixu_bad") is good and _rates("mixu_bad_stage1") == {"mixu_b": 1.0}
