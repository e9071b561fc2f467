"""benchmarks/flop_count.py and benchmarks/torchref.py: the FLOP convention shared with
torch.utils.flop_counter (checked by hand), the magvit2-pytorch layout mapping, the import of a
package's submodule without its __init__, and the subprocess runner's failure reports. The
reference models themselves need the separate torch 2.11 venv and are exercised by
`make bench-torchref`, not here."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_benchmark

flop_count = load_benchmark("flop_count")
torchref = load_benchmark("torchref")


def test_dot_and_conv_flops_by_hand():
  a, b = jnp.ones((4, 8)), jnp.ones((8, 16))
  assert flop_count.conv_matmul_flops(jnp.dot, a, b) == 2 * 4 * 16 * 8
  # Batched dot_general: contracting dim 8, output [3, 4, 16].
  bat = lambda x, y: jnp.einsum("bij,bjk->bik", x, y)
  assert flop_count.conv_matmul_flops(bat, jnp.ones((3, 4, 8)), jnp.ones((3, 8, 16))) == \
      2 * 3 * 4 * 16 * 8
  # Strided 2D conv: output [2, 3, 3, 6] (7x7 input, stride 2, SAME), 3x3x5 taps per output.
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x, k = jnp.ones((2, 7, 7, 5)), jnp.ones((3, 3, 5, 6))
  assert conv(x, k).shape == (2, 4, 4, 6)
  assert flop_count.conv_matmul_flops(conv, x, k) == 2 * (2 * 4 * 4 * 6) * (3 * 3 * 5)
  # The same conv through vp_jax.nn.onednn_conv's primitive counts the same.
  from vp_jax.nn.onednn_conv import onednn_conv
  same = lambda x, k: onednn_conv(x, k, (2, 2), ((1, 1), (1, 1)))
  assert jax.eval_shape(same, x, k).shape == (2, 4, 4, 6)
  assert flop_count.conv_matmul_flops(same, x, k) == 2 * (2 * 4 * 4 * 6) * (3 * 3 * 5)
  # Elementwise work is not counted.
  assert flop_count.conv_matmul_flops(lambda x: jnp.tanh(x) * 2, x) == 0


def test_flops_through_jit_scan_cond_and_platform_dependent():
  a = jnp.ones((4, 4))
  one = 2 * 4 * 4 * 4
  assert flop_count.conv_matmul_flops(jax.jit(lambda x: x @ x), a) == one
  scanned = lambda x: jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=5)[0]
  assert flop_count.conv_matmul_flops(scanned, a) == 5 * one
  # cond: the larger branch (two matmuls), not the sum.
  branchy = lambda x, p: jax.lax.cond(p, lambda y: y @ y @ y, lambda y: y @ y, x)
  assert flop_count.conv_matmul_flops(branchy, a, True) == 2 * one
  plat = lambda x: jax.lax.platform_dependent(x, cpu=lambda y: y @ y, default=lambda y: y @ y)
  assert flop_count.conv_matmul_flops(plat, a) == one


def test_magvit_layers_small_preset():
  from vp_jax.models.magvit import preset
  cfg = preset("small")
  layers = torchref.magvit_layers(cfg.filters, cfg.channel_multipliers, cfg.num_res_blocks,
                                  cfg.temporal_downsample)
  assert layers == (("consecutive_residual", 2), ("compress_space", 64),
                    ("consecutive_residual", 2), ("compress_space", 64), ("compress_time", 64),
                    ("consecutive_residual", 2), ("compress_space", 128), ("compress_time", 128),
                    ("consecutive_residual", 2), ("consecutive_residual", 2))
  # 8x space and 4x time, as ours.
  assert sum(l[0] == "compress_space" for l in layers) == 3
  assert sum(l[0] == "compress_time" for l in layers) == 2


def test_import_submodule_skips_package_init(tmp_path, monkeypatch):
  pkg = tmp_path / "refpkg_for_test"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("import a_module_that_does_not_exist_anywhere\n")
  (pkg / "model.py").write_text("from refpkg_for_test.helpers import X\nY = X + 1\n")
  (pkg / "helpers.py").write_text("X = 41\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    mod = torchref._import_submodule("refpkg_for_test", "model")
    assert mod.Y == 42
  finally:
    for name in [n for n in sys.modules if n.startswith("refpkg_for_test")]:
      del sys.modules[name]
  with pytest.raises(ImportError, match="not_installed_pkg_xyz is not installed"):
    torchref._import_submodule("not_installed_pkg_xyz", "model")


def test_run_reference_reports_why_it_cannot_run(tmp_path):
  missing = str(tmp_path / "no" / "python")
  assert torchref.run_reference("magvit", {}, np.zeros(1), python=missing) == \
      f"no interpreter at {missing} (make .venv-torchref/.installed)"
  # An interpreter without the reference packages: the subprocess fails and says why.
  msg = torchref.run_reference("magvit", {"threads": 1}, np.zeros((1, 1, 8, 8, 3), np.uint8),
                               python=sys.executable, timeout=300)
  assert isinstance(msg, str) and msg.startswith("failed (rc 1)")
  assert "magvit2_pytorch is not installed" in msg


def test_timed_waits_for_the_device_after_every_call(monkeypatch):
  """`_timed` calls `sync` after the warm-up and after each timed call, inside the timed span (a
  GPU call returns before its work is done); best and median over the timed calls only."""
  events, ticks = [], iter(range(100))
  monkeypatch.setattr(torchref.time, "perf_counter", lambda: next(ticks))

  def fn():
    events.append("call")
    return len(events)

  def sync():
    events.append("sync")
    next(ticks)   # the queued work: 1 extra tick inside each timed span (not in the warm-up's)

  best, out, times = torchref._timed(fn, 3, "best", sync)
  assert events == ["call", "sync"] * 4
  assert times == [2, 2, 2] and best == 2 and out == 7      # out: the last call's result
  events.clear()
  median, _, times = torchref._timed(fn, 2, "median")        # the default sync does nothing
  assert events == ["call"] * 3 and times == [1, 1] and median == 1
