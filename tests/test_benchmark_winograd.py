"""benchmarks/winograd_conv.py: F(2x2, 3x3) computes the tokenizer's causal 3x3x3 conv, and the
script times every variant on the shapes it is given."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fake_clocks import ScriptedClock
from tests.helpers import load_benchmark
from vp_jax.models.magvit.conv import conv3d_native
from vp_jax.nn import onednn_conv

wc = load_benchmark("winograd_conv")


def test_transform_matrices_reproduce_a_1d_correlation():
  # F(2, 3): y = A^T [(G g) * (B^T d)] is the valid correlation of a 4-sample d with a 3-tap g.
  rng = np.random.default_rng(0)
  d, g = rng.normal(size=4), rng.normal(size=3)
  direct = np.array([d[0:3] @ g, d[1:4] @ g])
  np.testing.assert_allclose(wc.A_T @ ((wc.G @ g) * (wc.B_T @ d)), direct, rtol=1e-6)


@pytest.mark.parametrize("kt,matmul,operands", [(3, "xla", "float32"), (1, "xla", "float32"),
                                                (3, "onednn", "float32"),
                                                (3, "xla", "bfloat16"),
                                                (3, "onednn", "bfloat16")])
def test_winograd_conv3d_is_the_causal_conv(kt, matmul, operands):
  if matmul == "onednn" and not onednn_conv.available(operands):
    pytest.skip(f"no oneDNN {operands} matmuls in this process")
  kx, kk = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (2, 5, 6, 8, 4), jnp.float32)
  kernel = jax.random.normal(kk, (kt, 3, 3, 4, 5), jnp.float32)
  direct = np.asarray(conv3d_native(x, kernel, (1, 1, 1), ((1, 1), (1, 1))))
  y = np.asarray(jax.jit(lambda a, k: wc.winograd_conv3d(a, k, matmul, operands))(x, kernel))
  assert y.shape == (2, 5, 6, 8, 5) and y.dtype == np.float32
  err = np.abs(y - direct).max() / np.abs(direct).max()
  # float32: rounding only; bfloat16 operands: the transformed values rounded to 8 bits.
  assert err < (1e-5 if operands == "float32" else 1e-2), err
  if operands == "float32":
    # Causal: frame t does not see frames after t.
    x2 = x.at[:, 3:].set(0.0)
    y2 = np.asarray(wc.winograd_conv3d(x2, kernel, matmul, operands))
    np.testing.assert_allclose(y2[:, :3], y[:, :3], rtol=1e-5, atol=1e-5)


def test_winograd_conv3d_rejects_what_it_cannot_compute():
  x = jnp.zeros((1, 3, 5, 8, 4))
  with pytest.raises(ValueError, match=r"x \(1, 3, 5, 8, 4\).*even H and W"):
    wc.winograd_conv3d(x, jnp.zeros((3, 3, 3, 4, 2)))
  with pytest.raises(ValueError, match="3x3 spatial kernel"):
    wc.winograd_conv3d(jnp.zeros((1, 3, 4, 4, 4)), jnp.zeros((3, 5, 5, 4, 2)))
  with pytest.raises(ValueError, match="matmul 'mkl'"):
    wc.winograd_conv3d(jnp.zeros((1, 3, 4, 4, 4)), jnp.zeros((3, 3, 3, 4, 2)), "mkl")


def test_parse_shape():
  assert wc.parse_shape("17x32x32x64x256") == (17, 32, 32, 64, 256)
  for bad in ("17x32x32x64", "17x31x32x64x256", "0x32x32x64x256"):
    with pytest.raises(ValueError, match="TxHxWxCinxCout with even H and W"):
      wc.parse_shape(bad)


def test_main_times_every_variant_against_the_float32_direct_conv(monkeypatch, capsys):
  names = list(wc.variants())
  assert names[:3] == ["direct_float32", "winograd_xla_float32", "winograd_onednn_float32"][
      :2 + onednn_conv.available()]
  assert ("direct_bfloat16" in names) == onednn_conv.available("bfloat16")
  # One warm-up (not timed) and two timed calls per variant: 2^-10 s, then 2^-9 s (the best).
  clock = ScriptedClock([2 ** -10, 2 ** -9] * len(names))
  monkeypatch.setattr(wc, "time", clock)
  r = wc.main(["--shapes", "3x4x4x2x8", "--repeats", "2"])
  out = capsys.readouterr().out
  assert clock.done and [name for _, name in r] == names
  flops = 2 * 3 * 4 * 4 * 27 * 2 * 8
  for (shape, name), fig in r.items():
    assert shape == (3, 4, 4, 2, 8) and fig["s"] == 2 ** -10
    assert fig["direct_gflops"] == pytest.approx(flops * 2 ** 10 / 1e9)
    assert fig["error"] < (1e-5 if name.endswith("float32") else 1e-2)
  assert r[(3, 4, 4, 2, 8), "direct_float32"]["error"] == 0.0
  assert f"3x4x4, 2 -> 8: {'direct_float32':24s}     0.98 ms" in out
  with pytest.raises(SystemExit):
    wc.main(["--shapes", "3x5x4x2x8"])
  assert "--shapes '3x5x4x2x8': TxHxWxCinxCout with even H and W" in capsys.readouterr().err
