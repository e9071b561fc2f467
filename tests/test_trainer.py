"""The trainer: loss curves across device counts and rule sets, resume, restore, non-finite steps."""
import dataclasses

import jax
import numpy as np
import pytest

from tests.helpers import (TINY, PoisonableLM, Poisoned, SigtermAt, TwoGroupGAN, tiny_batches,
                           tiny_trainer)
from vp_jax.checkpoint.manager import CheckpointError, Checkpointer
from vp_jax.data.iterators import IndexedBatchIterator
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import NonFiniteError, Trainer, TrainerConfig


def test_tiny_model_learns_on_one_device():
  result = tiny_trainer(train_steps=40, optimizers={
      "model": OptimizerConfig(learning_rate=3e-2, warmup_steps=2)}).fit(tiny_batches())
  losses = [result.losses[s] for s in sorted(result.losses)]
  assert len(losses) == 40
  assert losses[0] == pytest.approx(np.log(64), rel=0.15)   # starts near uniform over 64 ids
  assert np.mean(losses[-5:]) < 0.65 * losses[0], losses


@pytest.mark.parametrize("mesh", [MeshConfig(data=1, fsdp=8, tensor=1),
                                  MeshConfig(data=2, fsdp=2, tensor=2),
                                  MeshConfig(data=1, fsdp=2, tensor=4)],
                         ids=["fsdp8", "dp2-fsdp2-tp2", "fsdp2-tp4"])
def test_eight_devices_match_one_device(mesh):
  one = tiny_trainer().fit(tiny_batches()).losses
  eight = tiny_trainer(devices=8, mesh=mesh).fit(tiny_batches()).losses
  np.testing.assert_allclose([eight[s] for s in sorted(eight)], [one[s] for s in sorted(one)],
                             rtol=2e-5)


@pytest.mark.parametrize("k", [1, 3, 4], ids=["k=1", "k=save-1", "k=save"])
def test_resume_is_bit_identical(tmp_path, k):
  """Stop after k steps (save_every=4), resume to 12: losses k+1..12 equal an uninterrupted run."""
  full = tiny_trainer(tmp_path / "full").fit(tiny_batches()).losses
  first = tiny_trainer(tmp_path / "resumed")
  first.fit(tiny_batches(), stop_at=k)
  first.close()
  resumed = tiny_trainer(tmp_path / "resumed").fit(tiny_batches())
  assert resumed.start_step == k
  assert sorted(resumed.losses) == list(range(k + 1, 13))
  for step in range(k + 1, 13):
    assert resumed.losses[step] == full[step], step    # bit-for-bit


def test_checkpoint_saved_on_8_devices_restores_onto_4_and_1(tmp_path):
  mesh8 = MeshConfig(data=2, fsdp=2, tensor=2)
  saved = tiny_trainer(tmp_path, devices=8, mesh=mesh8, train_steps=4).fit(tiny_batches()).state
  want = jax.tree.map(np.asarray, jax.device_get(saved))
  for devices, mesh in [(4, MeshConfig(data=1, fsdp=2, tensor=2)), (1, MeshConfig())]:
    restored = tiny_trainer(tmp_path, devices=devices, mesh=mesh, train_steps=4).init_or_restore()
    assert restored.params["layers"]["qkv"].sharding.device_set == set(jax.devices()[:devices])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), want)
  # training continues on the new mesh from the restored step
  more = tiny_trainer(tmp_path, devices=4, mesh=MeshConfig(data=1, fsdp=2, tensor=2),
                      train_steps=6, save_every=100).fit(tiny_batches())
  assert more.start_step == 4 and sorted(more.losses) == [5, 6]


def test_nonfinite_step_is_skipped_and_counted():
  trainer = tiny_trainer(model_cls=PoisonableLM)
  batches = Poisoned(tiny_batches(), poison_at={1})
  state = trainer.init_or_restore()
  state, m0 = trainer.step(state, next(batches))
  before = jax.tree.map(np.asarray, jax.device_get((state.params, state.opt_state)))
  state, m1 = trainer.step(state, next(batches))          # poisoned
  after = jax.tree.map(np.asarray, jax.device_get((state.params, state.opt_state)))
  jax.tree.map(np.testing.assert_array_equal, after, before)   # untouched
  assert int(state.step) == 2 and int(state.nonfinite_total) == 1
  assert int(m1["nonfinite_streak"]) == 1
  state, m2 = trainer.step(state, next(batches))          # clean again: streak resets
  assert int(m2["nonfinite_streak"]) == 0 and int(state.nonfinite_total) == 1
  assert np.isfinite(float(m2["loss"]))


def test_too_many_nonfinite_steps_in_a_row_stop_with_clear_error():
  trainer = tiny_trainer(model_cls=PoisonableLM, max_consecutive_nonfinite=3)
  with pytest.raises(NonFiniteError, match=r"3 consecutive steps \(up to step 5\)"):
    trainer.fit(Poisoned(tiny_batches(), poison_at={2, 3, 4}))
  # two in a row is tolerated
  result = tiny_trainer(model_cls=PoisonableLM, max_consecutive_nonfinite=3).fit(
      Poisoned(tiny_batches(), poison_at={2, 3}))
  assert int(result.state.nonfinite_total) == 2 and max(result.losses) == 12


def test_gradient_accumulation_matches_full_batch():
  no_dropout = dataclasses.replace(TINY, dropout=0.0)
  full = tiny_trainer(model=no_dropout, train_steps=5).fit(tiny_batches()).losses
  accum = tiny_trainer(model=no_dropout, train_steps=5, grad_accum_steps=4).fit(
      tiny_batches()).losses
  np.testing.assert_allclose([accum[s] for s in range(1, 6)], [full[s] for s in range(1, 6)],
                             rtol=1e-5)


def test_bf16_compute_keeps_fp32_master_weights():
  fp32 = tiny_trainer(train_steps=5).fit(tiny_batches())
  bf16 = tiny_trainer(train_steps=5, compute_dtype="bfloat16").fit(tiny_batches())
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16.state.params))
  a = [fp32.losses[s] for s in range(1, 6)]
  b = [bf16.losses[s] for s in range(1, 6)]
  np.testing.assert_allclose(b, a, rtol=3e-2)      # bf16 rounding, same trajectory
  assert a != b                                    # and it really computed in bf16


def gan_batches():
  def make(i):
    rng = np.random.default_rng(i)
    return {"z": rng.normal(size=(8, 4)).astype(np.float32),
            "real": (rng.normal(size=(8, 4)) + 3).astype(np.float32),
            "nan_generator": np.full((8,), int(i == 1), np.int32)}
  return IndexedBatchIterator(make)


def test_two_optimizer_groups_update_their_own_parameters(tmp_path):
  config = dict(train_steps=3, save_every=1, log_every=1, progress=False, optimizers={
      "generator": OptimizerConfig(learning_rate=1e-2, schedule="constant"),
      "discriminator": OptimizerConfig(learning_rate=1e-1, schedule="constant")})
  trainer = Trainer(TwoGroupGAN, TrainerConfig(**config), make_mesh(MeshConfig(), jax.devices()[:2]),
                    DEFAULT_RULES, str(tmp_path))
  batches = gan_batches()
  s0 = trainer.init_or_restore()
  p0 = jax.device_get(s0.params)
  s1, m1 = trainer.step(s0, next(batches))
  p1 = jax.device_get(s1.params)
  assert set(m1) >= {"generator/loss", "discriminator/loss", "generator/learning_rate"}
  assert float(m1["discriminator/learning_rate"]) == pytest.approx(0.1)
  for name in ("gen", "disc"):
    assert not np.allclose(p1[name]["kernel"], p0[name]["kernel"]), name
  s2, m2 = trainer.step(s1, next(batches))   # generator loss is NaN: only the generator is kept
  p2 = jax.device_get(s2.params)
  np.testing.assert_array_equal(p2["gen"]["kernel"], p1["gen"]["kernel"])
  assert not np.allclose(p2["disc"]["kernel"], p1["disc"]["kernel"])
  assert int(m2["nonfinite_total"]) == 1
  # non-parameter variables flow through the step: one loss call per group per step, and the
  # skipped generator update of step 2 drops that call's variable update too (2 + 1)
  assert float(s2.rest["calls"]) == 3.0
  trainer.checkpointer.save(2, s2, batches.get_state())
  trainer.checkpointer.wait()
  restored, data = trainer.checkpointer.restore(trainer.abstract_state())
  assert float(restored.rest["calls"]) == 3.0 and data == {"index": 2}


def test_update_scales_give_a_group_per_parameter_rates(tmp_path):
  """The generator's kernel at 4x the rate: its first step (Adam: -lr * sign(g), b2 = 0) is 4x the
  unscaled run's, its bias and the discriminator at their base rates; unknown groups raise."""
  config = TrainerConfig(train_steps=3, log_every=1, progress=False, optimizers={
      "generator": OptimizerConfig(learning_rate=1e-2, schedule="constant", b2=0.0),
      "discriminator": OptimizerConfig(learning_rate=1e-1, schedule="constant", b2=0.0)})
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  kernel_x4 = lambda path, shape: 4.0 if path == "['gen']['kernel']" else None
  deltas = []
  for i, scales in enumerate((None, {"generator": kernel_x4})):
    trainer = Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES, str(tmp_path / str(i)),
                      update_scales=scales)
    s0 = trainer.init_or_restore()
    p0 = jax.device_get(s0.params)           # before the step donates s0
    s1, _ = trainer.step(s0, next(gan_batches()))
    p1 = jax.device_get(s1.params)
    trainer.checkpointer.save(1, s1, {"index": 1})   # the scaled optimizer state round-trips
    trainer.checkpointer.wait()
    restored, _ = trainer.checkpointer.restore(trainer.abstract_state())
    np.testing.assert_array_equal(restored.params["gen"]["kernel"], p1["gen"]["kernel"])
    trainer.close()
    deltas.append(jax.tree.map(lambda a, b: np.asarray(b) - np.asarray(a), p0, p1))
  plain, scaled = deltas
  np.testing.assert_allclose(np.abs(plain["gen"]["kernel"]), 1e-2, rtol=1e-4)
  np.testing.assert_allclose(scaled["gen"]["kernel"], 4 * plain["gen"]["kernel"], rtol=1e-5)
  np.testing.assert_allclose(scaled["gen"]["bias"], plain["gen"]["bias"], rtol=1e-5)
  # the discriminator steps on the updated generator: its gradient signs may differ, not its rate
  np.testing.assert_allclose(np.abs(scaled["disc"]["kernel"]), 1e-1, rtol=1e-4)
  with pytest.raises(ValueError, match=r"update_scales for groups \['gen'\]"):
    Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES, update_scales={"gen": kernel_x4})


def test_generator_ema_is_trained_saved_resumed_and_preferred_by_restore_parts(tmp_path, caplog):
  """ema_decay={"generator": 0.5}: the state averages the generator's params only; the average
  survives save and resume; restore_parts gives it for "gen" under weights="auto"/"ema", the raw
  params under "params", and names the params it has no average of."""
  config = TrainerConfig(train_steps=3, log_every=1, progress=False, ema_decay={"generator": 0.5},
                         async_checkpointing=False, optimizers={
      "generator": OptimizerConfig(learning_rate=1e-2, schedule="constant"),
      "discriminator": OptimizerConfig(learning_rate=1e-1, schedule="constant")})
  mesh = make_mesh(MeshConfig(), jax.devices()[:2])
  trainer = Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES, str(tmp_path))
  batches = gan_batches()
  state = trainer.init_or_restore()
  assert set(state.ema) == {"gen"}
  expected = jax.tree.map(np.asarray, jax.device_get(state.params["gen"]))
  for _ in range(2):                      # step 2's generator loss is NaN: params kept, EMA moves
    state, _ = trainer.step(state, next(batches))
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * np.asarray(p), expected,
                            jax.device_get(state.params["gen"]))
  jax.tree.map(lambda e, a: np.testing.assert_allclose(np.asarray(a), e, rtol=1e-6),
               expected, jax.device_get(state.ema["gen"]))
  trainer.checkpointer.save(2, state, batches.get_state())
  trainer.close()
  resumed = Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES, str(tmp_path)).init_or_restore()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.ema),
               jax.device_get(state.ema))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        {"params": jax.device_get(state.params)})
  ckpt = Checkpointer(f"{tmp_path}/checkpoints", create=False, async_save=False)   # as the loaders
  with caplog.at_level("WARNING"):
    assert ckpt.saved_ema_keys(2) == ["gen"]
  assert not [r for r in caplog.records if "does not exist" in r.getMessage()]  # no orbax noise
  raw, params = jax.device_get(state.params), {}
  for weights, averaged in (("auto", ["gen"]), ("params", [])):
    restored, step, from_ema = ckpt.restore_parts(target, 2, weights=weights)
    assert (step, from_ema) == (2, averaged)
    params[weights] = restored["params"]
    np.testing.assert_array_equal(params[weights]["disc"]["kernel"], raw["disc"]["kernel"])
  np.testing.assert_array_equal(params["auto"]["gen"]["kernel"], expected["kernel"])
  np.testing.assert_array_equal(params["params"]["gen"]["kernel"], raw["gen"]["kernel"])
  gen_only = {"params": {"gen": target["params"]["gen"]}}
  np.testing.assert_array_equal(
      ckpt.restore_parts(gen_only, 2, weights="ema")[0]["params"]["gen"]["kernel"],
      expected["kernel"])
  with pytest.raises(CheckpointError, match=r"no moving average of params \['disc'\]"):
    ckpt.restore_parts(target, 2, weights="ema")
  with pytest.raises(ValueError, match="weights='best'"):
    ckpt.restore_parts(target, 2, weights="best")
  # Replacing the params (inflation, conversion) restarts the average from them.
  fresh = Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES).init_or_restore()
  moved = Trainer(TwoGroupGAN, config, mesh, DEFAULT_RULES).with_params(fresh, raw)
  np.testing.assert_array_equal(np.asarray(moved.ema["gen"]["kernel"]), raw["gen"]["kernel"])
  with pytest.raises(ValueError, match=r"ema_decay has groups \['gen'\]"):
    Trainer(TwoGroupGAN, dataclasses.replace(config, ema_decay={"gen": 0.9}), mesh, DEFAULT_RULES)


def test_resume_restores_the_averages_it_can_and_starts_the_others(tmp_path):
  """A checkpoint without `ema` (written before the trainer kept averages) resumes, and so does
  one whose averages differ from the config's: kept ones restored, new ones start from the
  restored params, dropped ones ignored."""
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  opt = {"generator": OptimizerConfig(learning_rate=1e-2, schedule="constant"),
         "discriminator": OptimizerConfig(learning_rate=1e-1, schedule="constant")}
  config = lambda ema: TrainerConfig(train_steps=3, progress=False, optimizers=opt, ema_decay=ema,
                                     async_checkpointing=False)
  trainer = Trainer(TwoGroupGAN, config({"discriminator": 0.5}), mesh, DEFAULT_RULES,
                    str(tmp_path / "new"))
  state, _ = trainer.step(trainer.init_or_restore(), next(gan_batches()))
  saved = jax.device_get(state)
  trainer.checkpointer.save(1, state, {"index": 1})
  old_format = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                if f.name != "ema"}
  old = Checkpointer(tmp_path / "old" / "checkpoints", async_save=False)
  old.save(1, old_format, {"index": 1})
  old.close()
  trainer.close()
  for workdir, wants in (("new", {"generator": 0.9}), ("new", {"generator": 0.9,
                         "discriminator": 0.5}), ("old", {}), ("old", {"generator": 0.9})):
    restored = Trainer(TwoGroupGAN, config(wants), mesh, DEFAULT_RULES,
                       str(tmp_path / workdir)).init_or_restore()
    assert int(restored.step) == 1 and sorted(restored.ema) == sorted(
        {"generator": "gen", "discriminator": "disc"}[g] for g in wants)
    for key, ema in jax.device_get(restored.ema).items():
      want = saved.ema[key] if key in saved.ema and workdir == "new" else saved.params[key]
      jax.tree.map(np.testing.assert_array_equal, ema, want)
    assert not np.array_equal(saved.ema["disc"]["kernel"], saved.params["disc"]["kernel"])
  # The loaders read the old format too: no averages there, so "auto" gives the params.
  old = Checkpointer(tmp_path / "old" / "checkpoints", create=False, async_save=False)
  assert old.saved_ema_keys(1) is None
  target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), saved.params)}
  restored, _, from_ema = old.restore_parts(target, 1)
  assert from_ema == []
  jax.tree.map(np.testing.assert_array_equal, restored["params"], saved.params)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
  result = tiny_trainer(tmp_path, save_every=100).fit(SigtermAt(tiny_batches(), 5))
  assert result.preempted and max(result.losses) == 6
  trainer = tiny_trainer(tmp_path, save_every=100)
  assert trainer.checkpointer.all_steps()[-1] == 6
  resumed = trainer.fit(tiny_batches())
  assert resumed.start_step == 6 and max(resumed.losses) == 12


def test_periodic_eval_writes_metrics(tmp_path):
  result = tiny_trainer(tmp_path, eval_every=4, eval_batches=2).fit(
      tiny_batches(), eval_iter_fn=lambda: tiny_batches(seed=99))
  assert sorted(result.eval_metrics) == [4, 8, 12]
  assert result.eval_metrics[12]["loss"] < result.eval_metrics[4]["loss"]   # it learned
  assert set(result.eval_metrics[4]) >= {"loss", "accuracy"}
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())


def test_trainer_rejects_optimizers_that_do_not_match_the_model_groups():
  with pytest.raises(ValueError, match=r"optimizers has groups \['generator'\], the model has "
                                       r"\['model'\]"):
    tiny_trainer(optimizers={"generator": OptimizerConfig()})


@pytest.mark.parametrize("field,value", [("train_steps", 0), ("grad_accum_steps", 0),
                                         ("compute_dtype", "float16"),
                                         ("ema_decay", {"model": 1.0})])
def test_trainer_config_errors_name_the_field(field, value):
  with pytest.raises(ValueError, match=f"TrainerConfig.{field}"):
    tiny_trainer(**{field: value})
