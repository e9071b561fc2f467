"""Learning-rate schedules and the optimizer chain."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vp_jax.train.optim import OptimizerConfig, make_optimizer, make_schedule, scale_updates


def test_warmup_then_cosine():
  s = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine",
                                    end_learning_rate_ratio=0.1), total_steps=110)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)   # halfway through the decay
  assert float(s(110)) == pytest.approx(0.1)


def test_rsqrt_is_continuous_after_warmup():
  s = make_schedule(OptimizerConfig(learning_rate=2.0, warmup_steps=100, schedule="rsqrt"), 1000)
  assert float(s(100)) == pytest.approx(2.0)
  assert float(s(300)) == pytest.approx(2.0 * np.sqrt(100 / 300), rel=1e-5)


def test_schedule_errors_name_the_field():
  with pytest.raises(ValueError, match="OptimizerConfig.schedule='linear'"):
    make_schedule(OptimizerConfig(schedule="linear"), 10)
  with pytest.raises(ValueError, match="OptimizerConfig.learning_rate=0"):
    make_schedule(OptimizerConfig(learning_rate=0), 10)


def test_optimizer_clips_global_norm():
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, schedule="constant", clip_norm=1.0,
                                      b1=0.0, b2=0.0, eps=0.0), 10)
  params = {"w": jnp.zeros(2)}
  grads = {"w": jnp.array([30.0, 40.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # clipped to norm 1 -> (0.6, 0.8); Adam with b1=b2=0 normalizes to sign: -lr * sign
  np.testing.assert_allclose(np.asarray(updates["w"]), [-1.0, -1.0], rtol=1e-6)
  assert float(optax.tree.norm(grads)) == 50.0


def test_update_scale_multiplies_each_parameters_step():
  """Adam with b1=b2=0 steps by -lr * sign(g); the scale multiplies that per element, keyed by the
  parameter's path and shape, and None leaves a parameter at the base rate."""
  seen = []

  def scale(path, shape):
    seen.append((path, shape))
    return np.array([[3.0], [0.5]], np.float32) if path == "['a']['w']" else None

  tx = make_optimizer(OptimizerConfig(learning_rate=0.1, schedule="constant", clip_norm=None,
                                      b1=0.0, b2=0.0, eps=0.0), 10, update_scale=scale)
  params = {"a": {"w": jnp.zeros((2, 2))}, "b": jnp.zeros(3)}
  grads = {"a": {"w": jnp.array([[1.0, -2.0], [4.0, 1.0]])}, "b": jnp.array([1.0, -1.0, 5.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["a"]["w"]), [[-0.3, 0.3], [-0.05, -0.05]],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["b"]), [-0.1, 0.1, -0.1], rtol=1e-6)
  assert sorted(seen) == [("['a']['w']", (2, 2)), ("['b']", (3,))]


def test_scale_updates_alone_keeps_no_state():
  tx = scale_updates(lambda path, shape: 2.0)
  state = tx.init({"w": jnp.ones(2)})
  updates, new_state = tx.update({"w": jnp.array([1.0, -3.0])}, state)
  np.testing.assert_array_equal(np.asarray(updates["w"]), [2.0, -6.0])
  assert new_state == state == optax.EmptyState()
