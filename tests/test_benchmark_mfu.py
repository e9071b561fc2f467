"""benchmarks/mfu.py: its FLOP accounting (checked by hand and against XLA's own count) and its timers."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.toy_lm import PRESETS, ToyLM, ToyLMConfig

from tests.helpers import load_benchmark

mfu = load_benchmark("mfu")


def _xla_flops(fn, *args) -> float:
  """XLA's FLOP count of `fn` (from the lowered HLO; no compilation, so abstract args suffice)."""
  cost = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def test_flops_per_token_by_hand():
  cfg = ToyLMConfig(vocab_size=10, max_len=8, num_layers=1, embed_dim=4, num_heads=2, mlp_dim=8)
  # Matmul weights: qkv 4x3x2x2 = 48, out 2x2x4 = 16, mlp_in 4x8 = 32, mlp_out 8x4 = 32,
  # unembed 4x10 = 40 -> 168. Embedding lookups and norms are not matmuls.
  # Training = 3 x forward; forward = 2 x weights + 2 attention matmuls of 2 x len x width each.
  assert cfg.flops_per_token(8) == 6 * 168 + 12 * 1 * 8 * 4 == 1392
  assert cfg.flops_per_token(4) == 6 * 168 + 12 * 4 * 4 == 1200
  # The bench preset: 4 layers x (4 x 512^2 + 2 x 512 x 2048) + 512 x 1024 = 13,107,200 weights.
  assert PRESETS["bench"].flops_per_token(256) == 6 * 13_107_200 + 12 * 4 * 256 * 512


def test_flops_per_token_counts_the_models_matmul_weights():
  cfg = ToyLMConfig(vocab_size=96, max_len=16, num_layers=3, embed_dim=32, num_heads=4, mlp_dim=80)
  with nnx.use_eager_sharding(False):
    params = nnx.state(nnx.eval_shape(lambda: ToyLM(cfg, rngs=nnx.Rngs(0))), nnx.Param)
  sizes = {"/".join(k.key for k in path): math.prod(x.shape)
           for path, x in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params))}
  not_matmul = {"embed/embedding", "pos_embed", "final_norm/scale", "layers/attn_norm/scale",
                "layers/mlp_norm/scale"}
  assert not_matmul < set(sizes)
  matmul = sum(n for name, n in sizes.items() if name not in not_matmul)
  assert matmul == cfg.num_layers * (4 * 32 * 32 + 2 * 32 * 80) + 32 * 96
  assert cfg.flops_per_token(16) == 6 * matmul + 12 * cfg.num_layers * 16 * 32


def test_flops_per_token_matches_xla_count_of_the_training_gradient():
  # One layer: XLA's cost analysis counts a scanned layer body once, whatever the layer count.
  # A long sequence makes the attention term ~20% of the total, so dropping it would fail here.
  cfg = ToyLMConfig(vocab_size=256, max_len=128, num_layers=1, embed_dim=64, num_heads=4,
                    mlp_dim=256)
  with nnx.use_eager_sharding(False):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: ToyLM(cfg, rngs=nnx.Rngs(0))))
  batch, length = 2, 128
  ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)

  def grads(state, ids):
    def loss(state):
      return nnx.merge(graphdef, state).loss({"inputs": ids, "targets": ids},
                                             key=jax.random.key(0), train=True)[0]
    return jax.grad(loss)(state)

  per_token = _xla_flops(grads, state, ids) / (batch * length)
  # XLA also counts softmax, norms, GELU and the loss: a few percent above the model FLOPs.
  assert 0.97 <= per_token / cfg.flops_per_token(length) <= 1.10, (per_token,
                                                                  cfg.flops_per_token(length))


def test_matmul_flops_matches_xla():
  a = jnp.ones((64, 64), jnp.float32)
  assert mfu.matmul_flops(64) == 2 * 64 ** 3
  assert _xla_flops(jnp.dot, a, a) == mfu.matmul_flops(64)
  # (m, k, n): an m x k by k x n product.
  assert mfu.matmul_dims(64) == (64, 64, 64) and mfu.matmul_dims([96, 32, 16]) == (96, 32, 16)
  assert mfu.matmul_flops((96, 32, 16)) == 2 * 96 * 32 * 16 == \
      _xla_flops(jnp.dot, jnp.ones((96, 32)), jnp.ones((32, 16)))


def test_measure_matmul_peak_is_flops_over_best_time():
  per_size = {}
  peak = mfu.measure_matmul_peak((128, 256, (512, 64, 32)), repeats=3, per_size=per_size)
  assert set(per_size) == {128, 256, (512, 64, 32)}
  for size, (seconds, gflops) in per_size.items():
    m, k, n = (size,) * 3 if isinstance(size, int) else size
    assert 0 < seconds < 10
    assert gflops == pytest.approx(2 * m * k * n / seconds / 1e9, rel=1e-12)
  assert peak == max(g for _, g in per_size.values())
  # Finite, positive and physically plausible for a CPU (0.01 GFLOP/s .. 100 TFLOP/s).
  assert math.isfinite(peak) and 0.01 < peak < 1e5


def test_step_figures_accounting():
  # The end-to-end timing (trainer init + compile, ~30 s here) is exercised by running the script.
  cfg = ToyLMConfig(vocab_size=10, max_len=8, num_layers=1, embed_dim=4, num_heads=2, mlp_dim=8)
  r = mfu.step_figures(cfg, batch_size=4, seq_len=8, times=[0.5, 0.1, 0.3])
  assert r["steps"] == 3 and r["tokens_per_step"] == 32
  assert r["step_s"] == pytest.approx(0.3) and r["step_s_median"] == 0.3 and r["step_s_min"] == 0.1
  assert r["flops_per_token"] == 1392                  # see test_flops_per_token_by_hand
  assert r["flops_per_step"] == 1392 * 32
  assert r["tokens_per_s"] == pytest.approx(32 / 0.3)
  assert r["model_flops_per_s"] == pytest.approx(1392 * 32 / 0.3)


def test_config_and_trainer_setup():
  cfg = mfu.resolve_config("tiny", "bfloat16")
  assert cfg.dtype == "bfloat16" and cfg.max_len == PRESETS["tiny"].max_len
  assert mfu.resolve_config(cfg, "float32") == dataclasses.replace(cfg, dtype="float32")
  trainer = mfu.build_trainer(cfg, "bfloat16", steps=3)
  assert trainer.mesh.size == jax.device_count() == 8          # all local devices ...
  assert trainer.mesh.shape["data"] == 8                       # ... data-parallel
  assert trainer.config.compute_dtype == "bfloat16"
  assert trainer.config.train_steps == 3 + mfu.WARMUP_STEPS


@pytest.mark.parametrize("backend,dtype", [("xla", "float32"), ("onednn", "float32"),
                                           ("onednn", "bfloat16")])
def test_matmul_fn_multiplies(backend, dtype):
  from vp_jax.nn import onednn_conv
  if backend == "onednn" and not onednn_conv.available(dtype):
    with pytest.raises(ValueError, match=f"'onednn' with {dtype} operands"):
      mfu.matmul_fn(backend, dtype)
    return
  ka, kb = jax.random.split(jax.random.key(3))
  a = jax.random.normal(ka, (96, 96), jnp.dtype(dtype))
  b = jax.random.normal(kb, (96, 96), jnp.dtype(dtype))
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)   # of the (rounded) operands
  got = np.asarray(mfu.matmul_fn(backend, dtype)(a, b), np.float64)
  # oneDNN sums bfloat16 products in float32 and returns float32; XLA's float32 dot likewise.
  assert got.shape == (96, 96) and np.abs(got - exact).max() < 1e-4 * np.abs(exact).max()


def test_matmul_backends_and_peak_per_backend():
  with pytest.raises(ValueError, match="matmul backend 'mkl'"):
    mfu.matmul_fn("mkl")
  from vp_jax.nn import onednn_conv
  if not onednn_conv.available():
    pytest.skip("no oneDNN convolutions in this XLA:CPU")
  per_size = {}
  peak = mfu.measure_matmul_peak((128,), repeats=2, per_size=per_size, backend="onednn")
  assert peak == per_size[128][1] == pytest.approx(2 * 128 ** 3 / per_size[128][0] / 1e9)
