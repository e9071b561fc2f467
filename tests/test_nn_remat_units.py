"""Remat policies by name: `none` returns the function itself, the others wrap it in
jax.checkpoint with the named policy (checked by what the backward pass saves: everything, only
the inputs, every matmul, or only matmuls without batch dimensions), gradients unchanged, and
unknown names refused listing the known ones."""
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import print_saved_residuals
import numpy as np
import pytest

from vp_jax.nn.remat import REMAT_POLICIES, remat


def _layer(w, x):
  """A weights-only matmul, a batched matmul and two elementwise ops."""
  h = jnp.tanh(jnp.einsum("bij,jk->bik", x, w))            # no batch dims in the dot
  a = jnp.einsum("bik,bjk->bij", h, h)                       # batch dim b
  return jnp.sum(jnp.sin(a))


def _saved(fn, capsys, *args):
  """The residual lines jax prints for the backward pass of `fn` (arguments excluded)."""
  print_saved_residuals(fn, *args)
  lines = capsys.readouterr().out.strip().splitlines()
  return [line for line in lines if "from the argument" not in line]


W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
X = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3)), jnp.float32)


def test_none_is_the_function_itself():
  assert remat(_layer, "none") is _layer


def test_policies_save_what_their_names_say(capsys):
  none = _saved(_layer, capsys, W, X)
  full = _saved(remat(_layer, "full"), capsys, W, X)
  dots = _saved(remat(_layer, "dots"), capsys, W, X)
  no_batch = _saved(remat(_layer, "dots_no_batch"), capsys, W, X)
  assert len(none) >= 3                   # tanh / cos residuals of the elementwise ops
  assert full == []                       # only the inputs are kept
  assert len(dots) == 2 and all("dot_general" in line for line in dots)
  assert len(no_batch) == 1 and "dot_general" in no_batch[0]
  # The kept matmul is the weights-only one: shape [b, i, k] = [2, 5, 4], not [b, i, j] = [2, 5, 5].
  assert no_batch[0].startswith("f32[2,5,4]")
  assert sorted(line.split()[0] for line in dots) == ["f32[2,5,4]", "f32[2,5,5]"]


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_gradients_are_the_analytic_ones(policy):
  def f(x):
    return jnp.sum(x * jnp.sin(x))

  x = jnp.asarray([0.0, 0.5, -1.25, 2.0], jnp.float32)
  g = jax.grad(remat(f, policy))(x)
  expected = np.sin(np.asarray(x)) + np.asarray(x) * np.cos(np.asarray(x))
  np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-6, atol=1e-7)
  assert float(remat(f, policy)(x)) == pytest.approx(float(np.sum(x * np.sin(x))), rel=1e-6)


def test_unknown_policy_names_the_known_ones():
  assert sorted(REMAT_POLICIES) == ["dots", "dots_no_batch", "full", "none"]
  with pytest.raises(ValueError) as e:
    remat(_layer, "everything")
  assert str(e.value) == ("Unknown remat policy 'everything'; known: "
                          "['dots', 'dots_no_batch', 'full', 'none'].")
