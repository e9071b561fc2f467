"""Direct tests of three pieces of vp_jax/train the Trainer tests use only through whole runs:
`Progress` (its rate / ETA / bar arithmetic and print throttling, on an injected clock),
`TrainState` (a pytree whose step, params and optimizer state move as hand-computed SGD with
momentum says) and `TrainResult` (the losses, eval metrics and start step `Trainer.fit` reports,
against AdamW computed by hand, including a resumed run)."""
import dataclasses
import io
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fake_clocks import ManualClock
from vp_jax.data.iterators import IndexedBatchIterator
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train import progress as progress_lib
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.progress import Progress
from vp_jax.train.state import TrainState, model_spec
from vp_jax.train.step import make_train_step
from vp_jax.train.trainer import Trainer, TrainerConfig, TrainResult


# -- Progress --------------------------------------------------------------------------------------
@pytest.fixture
def clock(monkeypatch):
  c = ManualClock(now=1000.0)
  monkeypatch.setattr(progress_lib, "time", types.SimpleNamespace(perf_counter=c.perf_counter))
  return c


def test_progress_line_rate_eta_bar_and_metrics(clock):
  p = Progress(100, start=10, stream=io.StringIO())
  clock.now = 1004.0           # 20 steps (10 -> 30) in 4 s: 5 steps/s, 70 left: 14 s
  assert p.line(30, {"loss": 1.23456789, "grad_norm": 0.5}) == (
      "train [######..............] 30/100 | 5.00 steps/s | ETA 00:14 | loss=1.235 | grad_norm=0.5")
  # 1 step in 4 s: 0.25 steps/s, 89 left: 356 s = 5:56.
  assert p.line(11) == "train [##..................] 11/100 | 0.25 steps/s | ETA 05:56"
  # No step since the start: no rate, no ETA.
  assert p.line(10) == "train [##..................] 10/100 | 0.00 steps/s | ETA --:--"
  assert p.line(100) == "train [####################] 100/100 | 22.50 steps/s | ETA 00:00"
  # Hours: 10 steps in 4 s, 99990 left -> 39996 s = 11:06:36; the bar is still empty.
  long = Progress(100000, desc="lm", unit="examples", stream=io.StringIO())
  clock.now += 4.0
  assert long.line(10) == "lm [....................] 10/100000 | 2.50 examples/s | ETA 11:06:36"


def test_progress_line_without_elapsed_time_or_total(clock):
  p = Progress(0, stream=io.StringIO())
  assert p.line(0) == "train [....................] 0/0 | 0.00 steps/s | ETA --:--"
  q = Progress(8, stream=io.StringIO())
  assert q.line(4) == "train [##########..........] 4/8 | 0.00 steps/s | ETA --:--"  # 0 s elapsed
  # Past the total (a resumed run given a smaller total): the bar stays 20 wide, full.
  assert q.line(12) == "train [####################] 12/8 | 0.00 steps/s | ETA --:--"


def test_progress_update_throttles_full_lines_off_a_terminal(clock):
  out = io.StringIO()
  p = Progress(10, stream=out, min_interval_s=5.0)
  assert not p.interactive and p.min_interval_s == 5.0
  clock.now = 1001.0
  p.update(1)                   # the first update prints
  clock.now = 1003.0
  p.update(2)                   # 2 s after the last print: skipped
  clock.now = 1006.5
  p.update(3, {"loss": 2.0})    # 5.5 s: printed
  clock.now = 1007.0
  p.update(4, force=True)       # forced
  p.update(5)                   # 0.5 s after the forced one: skipped
  clock.now = 1007.5
  p.update(10)                  # the last step always prints
  assert out.getvalue().splitlines() == [
      "train [##..................] 1/10 | 1.00 steps/s | ETA 00:09",
      "train [######..............] 3/10 | 0.46 steps/s | ETA 00:15 | loss=2",
      "train [########............] 4/10 | 0.57 steps/s | ETA 00:10",
      "train [####################] 10/10 | 1.33 steps/s | ETA 00:00"]
  assert out.getvalue().endswith("\n") and "\r" not in out.getvalue()
  silent = io.StringIO()
  off = Progress(10, stream=silent, enabled=False)
  off.update(10, force=True)
  assert silent.getvalue() == ""


def test_progress_redraws_in_place_on_a_terminal(clock):
  class Tty(io.StringIO):
    def isatty(self):
      return True

  out = Tty()
  p = Progress(4, stream=out, min_interval_s=60.0, unit="clips")
  assert p.interactive and p.min_interval_s == 0.0     # a terminal redraws every update
  for step in range(1, 5):
    clock.now += 0.5
    p.update(step)
  assert out.getvalue() == (
      "\rtrain [#####...............] 1/4 | 2.00 clips/s | ETA 00:01"
      "\rtrain [##########..........] 2/4 | 2.00 clips/s | ETA 00:01"
      "\rtrain [###############.....] 3/4 | 2.00 clips/s | ETA 00:00"
      "\rtrain [####################] 4/4 | 2.00 clips/s | ETA 00:00\n")


# -- TrainState ------------------------------------------------------------------------------------
class Quad(nnx.Module):
  """One parameter w [3]; loss = mean over rows of 0.5 * |w - t|^2, so grad = w - mean(t)."""

  def __init__(self, rngs: nnx.Rngs):
    del rngs
    self.w = nnx.Param(jnp.array([1.0, 2.0, 3.0]))

  def loss(self, batch, *, key, train, group="model"):
    del key, train, group
    loss = 0.5 * jnp.mean(jnp.sum(jnp.square(self.w[...] - batch["t"]), axis=-1))
    return loss, {"w0": self.w[0]}


def _hand_state(tx) -> TrainState:
  params = {"w": jnp.array([1.0, 2.0, 3.0])}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest={},
                    opt_state={"model": tx.init(params)}, rng=jax.random.PRNGKey(5),
                    nonfinite_streak=jnp.zeros((), jnp.int32),
                    nonfinite_total=jnp.zeros((), jnp.int32), ema={})


def test_train_state_is_a_pytree_of_its_fields_in_order():
  # Trainer._restore rebuilds a TrainState from these names.
  assert [f.name for f in dataclasses.fields(TrainState)] == [
      "step", "params", "rest", "opt_state", "rng", "nonfinite_streak", "nonfinite_total", "ema"]
  state = _hand_state(optax.sgd(0.1))
  leaves = jax.tree.leaves(state)
  assert len(leaves) == 5          # step, w, rng, the two counters (sgd keeps no state)
  np.testing.assert_array_equal(leaves[1], [1.0, 2.0, 3.0])
  doubled = jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s))(state)
  assert isinstance(doubled, TrainState)
  np.testing.assert_array_equal(doubled.params["w"], [2.0, 4.0, 6.0])
  bumped = state.replace(step=state.step + 3)
  assert int(bumped.step) == 3 and int(state.step) == 0     # replace copies, keeps the original
  assert bumped.params is state.params


def test_train_state_after_two_sgd_momentum_updates():
  tx = optax.sgd(0.1, momentum=0.9)
  spec = model_spec(Quad)
  step = jax.jit(make_train_step(spec, {"model": tx}, {"model": optax.constant_schedule(0.1)}))
  state = _hand_state(tx)
  batch = {"t": np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)}   # mean t = [0, 0, 1]
  # g1 = w0 - [0, 0, 1] = [1, 2, 2]; trace = g1; w1 = w0 - 0.1 * trace = [0.9, 1.8, 2.8].
  one, m1 = step(state, batch)
  assert int(one.step) == 1
  np.testing.assert_allclose(one.params["w"], [0.9, 1.8, 2.8], rtol=1e-6)
  np.testing.assert_allclose(one.opt_state["model"][0].trace["w"], [1.0, 2.0, 2.0], rtol=1e-6)
  # loss = 0.5 * mean(|w0 - t|^2) = 0.5 * mean(14, 6) = 5.
  assert float(m1["loss"]) == pytest.approx(5.0, rel=1e-6)
  assert float(m1["w0"]) == pytest.approx(1.0)
  np.testing.assert_array_equal(jax.random.key_data(one.rng),
                                jax.random.key_data(jax.random.PRNGKey(5)))   # never advanced
  assert (int(one.nonfinite_streak), int(one.nonfinite_total), one.ema, one.rest) == (0, 0, {}, {})
  # g2 = w1 - [0, 0, 1] = [0.9, 1.8, 1.8]; trace = 0.9 * g1 + g2 = [1.8, 3.6, 3.6];
  # w2 = w1 - 0.1 * trace = [0.72, 1.44, 2.44].
  two, _ = step(one, batch)
  assert int(two.step) == 2
  np.testing.assert_allclose(two.params["w"], [0.72, 1.44, 2.44], rtol=1e-6)
  np.testing.assert_allclose(two.opt_state["model"][0].trace["w"], [1.8, 3.6, 3.6], rtol=1e-6)


# -- TrainResult -----------------------------------------------------------------------------------
LR, B1, B2, EPS = 0.1, 0.9, 0.99, 1e-8


def _targets(i):
  """Batch i: two rows whose mean is [i, 0, 1]."""
  return np.array([[i, -1.0, 0.0], [i, 1.0, 2.0]], np.float32)


def _adamw_by_hand(steps):
  """(losses {step: loss}, params after each step) of AdamW on Quad over batches 0..steps-1."""
  w, m, v = np.array([1.0, 2.0, 3.0]), np.zeros(3), np.zeros(3)
  losses, params = {}, {}
  for t in range(1, steps + 1):
    rows = _targets(t - 1).astype(np.float64)
    losses[t] = 0.5 * np.mean(np.sum((w - rows) ** 2, axis=-1))
    g = w - rows.mean(0)
    m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
    w = w - LR * (m / (1 - B1 ** t)) / (np.sqrt(v / (1 - B2 ** t)) + EPS)
    params[t] = w
  return losses, params


def _trainer(workdir=None):
  opt = OptimizerConfig(learning_rate=LR, schedule="constant", b1=B1, b2=B2, eps=EPS,
                        clip_norm=None)
  cfg = TrainerConfig(train_steps=4, optimizers={"model": opt}, log_every=1, eval_every=2,
                      save_every=2, progress=False, async_checkpointing=False)
  return Trainer(Quad, cfg, make_mesh(MeshConfig(), jax.devices()[:1]), DEFAULT_RULES, workdir)


def _eval_iter():
  return IndexedBatchIterator(lambda i: {"t": np.zeros((2, 3), np.float32)})


def test_train_result_holds_the_losses_eval_metrics_and_start_of_a_fit(tmp_path):
  losses, params = _adamw_by_hand(4)
  trainer = _trainer()
  result = trainer.fit(IndexedBatchIterator(lambda i: {"t": _targets(i)}), _eval_iter)
  assert isinstance(result, TrainResult)
  assert (result.start_step, result.preempted) == (0, False)
  assert sorted(result.losses) == [1, 2, 3, 4]
  for s in range(1, 5):
    assert result.losses[s] == pytest.approx(losses[s], rel=1e-5), s
  # Eval at steps 2 and 4 on t = 0: loss 0.5 * |w|^2, w0 the metric of the model's loss.
  assert sorted(result.eval_metrics) == [2, 4]
  for s in (2, 4):
    assert set(result.eval_metrics[s]) == {"loss", "w0"}
    assert result.eval_metrics[s]["loss"] == pytest.approx(0.5 * np.sum(params[s] ** 2), rel=1e-5)
    assert result.eval_metrics[s]["w0"] == pytest.approx(params[s][0], rel=1e-5)
  assert int(result.state.step) == 4
  np.testing.assert_allclose(result.state.params["w"], params[4], rtol=1e-5)
  # Stopped at step 2 and resumed: the second result starts at 2 and holds only steps 3 and 4,
  # with the uninterrupted run's numbers.
  first = _trainer(str(tmp_path))
  part = first.fit(IndexedBatchIterator(lambda i: {"t": _targets(i)}), stop_at=2)
  first.close()
  assert (part.start_step, sorted(part.losses), part.eval_metrics) == (0, [1, 2], {})
  second = _trainer(str(tmp_path))
  rest = second.fit(IndexedBatchIterator(lambda i: {"t": _targets(i)}))
  second.close()
  assert (rest.start_step, sorted(rest.losses), rest.preempted) == (2, [3, 4], False)
  for s in (3, 4):
    assert rest.losses[s] == pytest.approx(losses[s], rel=1e-5), s
  np.testing.assert_allclose(rest.state.params["w"], params[4], rtol=1e-5)
