"""The train state's construction (model_spec, shardings, abstract and real init) and the jitted
train/eval steps, called directly on a linear model whose losses and SGD updates are computed by
hand here (the Trainer tests cover them only through whole runs)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.state import (abstract_train_state, create_train_state, model_spec,
                                train_state_shardings)
from vp_jax.train.step import make_eval_step, make_train_step


class Linear2(nnx.Module):
  """Two parameter groups: `a` [8, 4] (logical axes embed x mlp) and `b` [4] (replicated);
  loss = mean((x @ a + b - y)^2) / 2 for group "first", mean((x @ a + b)^2) / 2 for "second"."""

  def __init__(self, rngs: nnx.Rngs):
    init = nnx.with_partitioning(nnx.initializers.normal(1.0), ("embed", "mlp"))
    self.a = nnx.Param(init(rngs.params(), (8, 4), jnp.float32))
    self.b = nnx.Param(jnp.full((4,), 0.5, jnp.float32))

  def optimizer_groups(self):
    return {"first": ("a",), "second": ("b",)}

  def loss(self, batch, *, key, train, group="first"):
    pred = batch["x"] @ self.a[...] + self.b[...]
    target = batch["y"] if group == "first" else 0.0
    loss = 0.5 * jnp.mean(jnp.square(pred - target))
    return loss, {"pred_mean": jnp.mean(pred)}


class OneGroup(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.w = nnx.Param(jnp.ones((3,)))
    self.v = nnx.Param(jnp.ones((2,)))

  def loss(self, batch, *, key, train, group="model"):
    return jnp.sum(self.w[...]) + jnp.sum(self.v[...]) * batch["s"].mean(), {}


class BadGroups(OneGroup):
  def optimizer_groups(self):
    return {"only": ("w",)}


def _batch(seed=0, n=4):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, 8)).astype(np.float32),
          "y": rng.normal(size=(n, 4)).astype(np.float32)}


def test_model_spec_reads_groups_and_rebuilds_the_module():
  spec = model_spec(Linear2)
  assert spec.groups == {"first": ("a",), "second": ("b",)}
  assert model_spec(OneGroup).groups == {"model": ("v", "w")}
  with pytest.raises(ValueError, match=r"must partition the top-level parameters \['v', 'w'\]"):
    model_spec(BadGroups)
  a, b = np.arange(32.0).reshape(8, 4), np.full((4,), 2.0)
  model = spec.merge({"a": jnp.asarray(a), "b": jnp.asarray(b)}, {})
  batch = _batch()
  loss, _ = model.loss(batch, key=None, train=False, group="second")
  assert float(loss) == pytest.approx(0.5 * np.mean(np.square(batch["x"] @ a + b)), rel=1e-5)


def test_shardings_abstract_and_created_state_agree_on_a_mesh():
  mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
  factory = Linear2
  spec = model_spec(factory)
  txs = {"first": optax.adam(1e-2), "second": optax.sgd(0.1)}
  sh = train_state_shardings(factory, spec, txs, mesh, DEFAULT_RULES)
  assert sh.params["a"].spec == PartitionSpec("fsdp", "tensor")       # embed -> fsdp, mlp -> tensor
  assert sh.params["b"].spec == PartitionSpec() and sh.step.spec == PartitionSpec()
  adam = sh.opt_state["first"][0]                                      # ScaleByAdamState
  assert adam.mu["a"].spec == adam.nu["a"].spec == PartitionSpec("fsdp", "tensor")
  assert adam.count.spec == PartitionSpec()                            # non-param leaf: replicated
  abstract = abstract_train_state(factory, spec, txs, sh)
  assert abstract.params["a"].shape == (8, 4) and abstract.params["a"].sharding == sh.params["a"]
  state = create_train_state(factory, spec, txs, 3, sh)
  assert state.params["a"].sharding == sh.params["a"]
  assert len(state.params["a"].addressable_shards) == 4
  assert state.params["a"].addressable_shards[0].data.shape == (4, 2)
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  for real, ab in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert real.shape == ab.shape and real.dtype == ab.dtype
  # The seed fixes the parameters; another seed changes the random ones (not the constant b).
  again = create_train_state(factory, spec, txs, 3, sh)
  other = create_train_state(factory, spec, txs, 4, sh)
  np.testing.assert_array_equal(np.asarray(again.params["a"]), np.asarray(state.params["a"]))
  assert not np.allclose(np.asarray(other.params["a"]), np.asarray(state.params["a"]))
  np.testing.assert_array_equal(np.asarray(state.params["b"]), np.full((4,), 0.5))
  assert int(state.step) == 0 and int(state.nonfinite_total) == 0


def _state(lr_first=0.1, lr_second=0.5):
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  factory = Linear2
  spec = model_spec(factory)
  txs = {"first": optax.sgd(lr_first), "second": optax.sgd(lr_second)}
  sh = train_state_shardings(factory, spec, txs, mesh, DEFAULT_RULES)
  return spec, txs, create_train_state(factory, spec, txs, 0, sh)


def test_train_step_applies_each_groups_sgd_update_in_order():
  spec, txs, state = _state()
  scheds = {"first": optax.constant_schedule(0.1), "second": optax.constant_schedule(0.5)}
  step = jax.jit(make_train_step(spec, txs, scheds))
  batch = _batch()
  a, b = np.asarray(state.params["a"], np.float64), np.asarray(state.params["b"], np.float64)
  x, y = batch["x"].astype(np.float64), batch["y"].astype(np.float64)
  n = x.shape[0] * 4
  # group "first" updates a on its loss; then "second" updates b with the new a.
  r1 = x @ a + b - y
  a1 = a - 0.1 * (x.T @ r1) / n
  r2 = x @ a1 + b
  b1 = b - 0.5 * r2.sum(0) / n
  new, metrics = step(state, batch)
  np.testing.assert_allclose(np.asarray(new.params["a"]), a1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new.params["b"]), b1, rtol=1e-5, atol=1e-6)
  assert float(metrics["first/loss"]) == pytest.approx(0.5 * np.mean(r1 ** 2), rel=1e-5)
  assert float(metrics["second/loss"]) == pytest.approx(0.5 * np.mean(r2 ** 2), rel=1e-5)
  assert float(metrics["first/grad_norm"]) == pytest.approx(np.linalg.norm(x.T @ r1 / n), rel=1e-5)
  assert float(metrics["second/learning_rate"]) == pytest.approx(0.5)
  assert float(metrics["first/pred_mean"]) == pytest.approx(np.mean(x @ a + b), rel=1e-5)
  assert int(new.step) == 1 and int(metrics["nonfinite_total"]) == 0
  # A non-finite batch drops both groups' updates and counts the step.
  bad = dict(batch, x=np.full_like(batch["x"], np.nan))
  same, m = step(new, bad)
  np.testing.assert_array_equal(np.asarray(same.params["a"]), np.asarray(new.params["a"]))
  np.testing.assert_array_equal(np.asarray(same.params["b"]), np.asarray(new.params["b"]))
  assert (int(m["nonfinite_streak"]), int(m["nonfinite_total"]), int(same.step)) == (1, 1, 2)


def test_gradient_accumulation_equals_the_full_batch_and_checks_divisibility():
  spec, txs, state = _state()
  scheds = {g: optax.constant_schedule(0.1) for g in ("first", "second")}
  batch = _batch(n=6)
  full, _ = jax.jit(make_train_step(spec, txs, scheds))(state, batch)
  accum, _ = jax.jit(make_train_step(spec, txs, scheds, grad_accum_steps=3))(state, batch)
  for k in ("a", "b"):
    np.testing.assert_allclose(np.asarray(accum.params[k]), np.asarray(full.params[k]),
                               rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="not divisible by grad_accum_steps=4"):
    jax.jit(make_train_step(spec, txs, scheds, grad_accum_steps=4))(state, batch)
  with pytest.raises(ValueError, match="grad_accum_steps=0"):
    make_train_step(spec, txs, scheds, grad_accum_steps=0)


def test_eval_step_reports_every_groups_loss_without_updating():
  spec, _, state = _state()
  batch = _batch(1)
  out = jax.jit(make_eval_step(spec))(state, batch)
  a, b = np.asarray(state.params["a"]), np.asarray(state.params["b"])
  pred = batch["x"] @ a + b
  first = 0.5 * np.mean((pred - batch["y"]) ** 2)
  assert float(out["first/loss"]) == pytest.approx(first, rel=1e-5)
  assert float(out["second/loss"]) == pytest.approx(0.5 * np.mean(pred ** 2), rel=1e-5)
  assert float(out["second/pred_mean"]) == pytest.approx(pred.mean(), rel=1e-4, abs=1e-6)
  bf16 = jax.jit(make_eval_step(spec, compute_dtype="bfloat16"))(state, batch)
  assert float(bf16["first/loss"]) == pytest.approx(float(out["first/loss"]), rel=3e-2)


def test_ema_of_one_group_follows_its_params_sharded_like_them():
  """`ema_decay={"first": 0.9}`: the state keeps a moving average of group first's params only
  (key "a"), starting at the initial params, sharded like them; each step (a skipped one too) it
  becomes 0.9 * ema + 0.1 * params, and the donated step leaves it readable."""
  mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
  spec = model_spec(Linear2)
  txs = {"first": optax.sgd(0.1), "second": optax.sgd(0.5)}
  sh = train_state_shardings(Linear2, spec, txs, mesh, DEFAULT_RULES, ema_groups=("first",))
  assert set(sh.ema) == {"a"} and sh.ema["a"] == sh.params["a"]
  abstract = abstract_train_state(Linear2, spec, txs, sh, ema_groups=("first",))
  state = create_train_state(Linear2, spec, txs, 0, sh, ema_groups=("first",))
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  assert state.ema["a"].sharding == sh.params["a"]
  np.testing.assert_array_equal(np.asarray(state.ema["a"]), np.asarray(state.params["a"]))
  scheds = {g: optax.constant_schedule(0.1) for g in ("first", "second")}
  step = jax.jit(make_train_step(spec, txs, scheds, ema_decay={"first": 0.9}),
                 donate_argnums=(0,), out_shardings=(sh, None))
  expected = np.asarray(state.params["a"], np.float64)
  for seed in range(3):
    batch = _batch(seed) if seed != 1 else dict(_batch(seed), x=np.full((4, 8), np.nan, np.float32))
    state, _ = step(state, batch)
    expected = 0.9 * expected + 0.1 * np.asarray(state.params["a"], np.float64)
    np.testing.assert_allclose(np.asarray(state.ema["a"]), expected, rtol=1e-6, atol=1e-7)
  assert not np.allclose(np.asarray(state.ema["a"]), np.asarray(state.params["a"]), atol=1e-3)
  assert state.ema["a"].sharding == sh.params["a"] and int(state.nonfinite_total) == 1
  # Without ema_decay the state carries no average.
  assert create_train_state(Linear2, spec, txs, 0, train_state_shardings(
      Linear2, spec, txs, mesh, DEFAULT_RULES)).ema == {}
