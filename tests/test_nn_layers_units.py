"""vp_jax.nn.layers on their own: Dense (x @ kernel, no bias; fan-in truncated-normal init), RMSNorm
(x / sqrt(mean(x^2) + eps) * scale in float32), Embed (table rows; `attend` = x @ table.T) and
`dropout`, each against a direct numpy computation from the layer's own parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.nn import layers


def _normal(shape, seed=0, scale=1.0):
  return np.asarray(np.random.default_rng(seed).normal(size=shape) * scale, np.float32)


def _dense(features_in, features_out, axes=("embed", "mlp"), seed=0, **kw):
  with nnx.use_eager_sharding(False):
    return layers.Dense(features_in, features_out, axes, rngs=nnx.Rngs(seed), **kw)


def _embed(vocab, features, seed=0, **kw):
  with nnx.use_eager_sharding(False):
    return layers.Embed(vocab, features, rngs=nnx.Rngs(seed), **kw)


def _norm(features, **kw):
  with nnx.use_eager_sharding(False):
    return layers.RMSNorm(features, **kw)


# -- Dense --------------------------------------------------------------------------------------
def test_dense_hand_example_has_no_bias():
  dense = _dense(2, 3)
  dense.kernel[...] = jnp.asarray([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])   # [in 2, out 3]
  got = dense(jnp.asarray([[1.0, 2.0], [0.0, 0.0]]))                     # [2, in] -> [2, out]
  np.testing.assert_array_equal(np.asarray(got), [[1.0, 2.0, 8.0], [0.0, 0.0, 0.0]])


def test_dense_equals_x_matmul_kernel_over_leading_axes():
  dense = _dense(6, 5, seed=3)
  assert dense.kernel.shape == (6, 5) and dense.kernel.dtype == jnp.float32
  assert dense.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
  x = _normal((2, 3, 4, 6), seed=1)                                      # [B, L, M, in]
  got = np.asarray(dense(jnp.asarray(x)))                                # [B, L, M, out]
  want = np.einsum("blmi,io->blmo", x.astype(np.float64), np.asarray(dense.kernel[...], np.float64))
  assert got.shape == (2, 3, 4, 5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dense_bfloat16_computes_in_bfloat16_and_keeps_float32_weights():
  dense = _dense(8, 4, seed=2, dtype=jnp.bfloat16)
  assert dense.kernel.dtype == jnp.float32
  x = _normal((3, 8), seed=4)                                            # [N, in]
  got = dense(jnp.asarray(x))
  assert got.dtype == jnp.bfloat16
  # The product of bfloat16-rounded inputs and weights, to bfloat16 precision.
  xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
  wb = np.asarray(dense.kernel[...].astype(jnp.bfloat16), np.float64)
  np.testing.assert_allclose(np.asarray(got, np.float64), xb @ wb, rtol=2 ** -7, atol=2 ** -7)
  # and differs from the float32 product by more than float32 rounding would.
  full = x.astype(np.float64) @ np.asarray(dense.kernel[...], np.float64)
  assert np.abs(np.asarray(got, np.float64) - full).max() > 1e-4


def test_dense_init_is_fan_in_truncated_normal():
  fan_in = 256
  w = np.asarray(_dense(fan_in, 128, seed=5).kernel[...])                # 32768 draws
  assert abs(w.mean()) < 3e-3
  np.testing.assert_allclose(w.std(), fan_in ** -0.5, rtol=0.03)         # variance 1 / fan_in
  # truncated at 2 standard deviations of the underlying normal (std / 0.8796)
  bound = 2 * fan_in ** -0.5 / 0.87962566103423978
  assert np.abs(w).max() <= bound + 1e-6 and np.abs(w).max() > 0.9 * bound


# -- RMSNorm ------------------------------------------------------------------------------------
def test_rmsnorm_hand_example():
  # x = [3, 4]: mean(x^2) = 12.5, so y = x / sqrt(12.5 + 1e-6)
  got = np.asarray(_norm(2)(jnp.asarray([[3.0, 4.0]])))
  np.testing.assert_allclose(got, [[3 / np.sqrt(12.5), 4 / np.sqrt(12.5)]], rtol=1e-6)
  np.testing.assert_allclose(got, [[0.84852815, 1.1313709]], rtol=1e-6)


def test_rmsnorm_matches_formula_with_its_scale_and_eps():
  norm = _norm(8, eps=1e-3)
  assert norm.scale.get_metadata()["out_sharding"] == ("norm",)
  np.testing.assert_array_equal(np.asarray(norm.scale[...]), np.ones(8))   # starts at 1
  scale = _normal((8,), seed=7)
  norm.scale[...] = jnp.asarray(scale)
  x = _normal((2, 3, 8), seed=8, scale=0.05).astype(np.float64)          # [B, L, D], rms ~ eps
  want = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-3) * scale
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x, jnp.float32))), want, rtol=1e-5,
                             atol=1e-6)


def test_rmsnorm_eps_is_added_to_the_mean_square():
  x = jnp.full((1, 4), 1e-3)                 # mean(x^2) = 1e-6
  np.testing.assert_allclose(np.asarray(_norm(4)(x)), 1e-3 / np.sqrt(2e-6), rtol=1e-5)  # 0.7071
  np.testing.assert_allclose(np.asarray(_norm(4, eps=1e-12)(x)), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(_norm(4)(jnp.zeros((1, 4)))), 0.0)   # finite at 0


def test_rmsnorm_is_scale_invariant_and_computes_in_float32():
  x = _normal((4, 16), seed=9)
  norm = _norm(16)
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(1000 * x))), np.asarray(norm(x)),
                             rtol=1e-5, atol=1e-6)
  # bfloat16 input: normalized in float32, then cast once to the layer's dtype
  xb = jnp.asarray(x, jnp.bfloat16)
  x64 = np.asarray(xb, np.float64)
  want = x64 / np.sqrt(np.mean(x64 * x64, -1, keepdims=True) + 1e-6)
  out32 = _norm(16)(xb)
  assert out32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out32), want, rtol=1e-5, atol=1e-6)
  out16 = _norm(16, dtype=jnp.bfloat16)(xb)
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out16, np.float64), want, rtol=2 ** -8, atol=1e-6)


# -- Embed --------------------------------------------------------------------------------------
def test_embed_lookup_returns_the_table_rows():
  embed = _embed(11, 6, seed=1)
  table = np.asarray(embed.embedding[...])                               # [V, D]
  assert table.shape == (11, 6)
  assert embed.embedding.get_metadata()["out_sharding"] == ("vocab", "embed")
  ids = np.asarray([[0, 10, 3], [3, 3, 7]], np.int32)                    # [B, L]
  got = np.asarray(embed(jnp.asarray(ids)))                              # [B, L, D]
  assert got.shape == (2, 3, 6)
  np.testing.assert_array_equal(got, table[ids])


def test_embed_attend_is_x_times_table_transposed():
  embed = _embed(9, 5, seed=2)
  table = np.asarray(embed.embedding[...], np.float64)
  x = _normal((2, 3, 5), seed=3)                                         # [B, L, D]
  logits = np.asarray(embed.attend(jnp.asarray(x)))                      # [B, L, V]
  assert logits.shape == (2, 3, 9)
  np.testing.assert_allclose(logits, x @ table.T, rtol=1e-5, atol=1e-5)
  # tied weights: the logit of an embedded token against its own row is the row's squared norm
  ids = jnp.asarray([[4, 0]])
  tied = np.asarray(embed.attend(embed(ids)))
  np.testing.assert_allclose(tied[0, 0, 4], np.sum(table[4] ** 2), rtol=1e-5)
  np.testing.assert_allclose(tied[0, 1, 0], np.sum(table[0] ** 2), rtol=1e-5)


def test_embed_init_std_and_dtype():
  embed = _embed(512, 64, seed=4, init_std=0.25, dtype=jnp.bfloat16)    # 32768 draws
  table = np.asarray(embed.embedding[...])
  assert embed.embedding.dtype == jnp.float32
  np.testing.assert_allclose(table.std(), 0.25, rtol=0.03)
  assert abs(table.mean()) < 0.005
  out = embed(jnp.asarray([[1, 2]]))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.asarray(table[[1, 2]],
                                                                        jnp.bfloat16))[None])
  assert embed.attend(jnp.ones((1, 64))).dtype == jnp.bfloat16


# -- dropout ------------------------------------------------------------------------------------
def test_dropout_is_inverted_and_keyed_by_salt():
  y = jnp.ones((100, 100)) * 3.0
  key = jax.random.key(0)
  assert layers.dropout(y, None, 0.5) is y
  assert layers.dropout(y, key, 0.0) is y
  out = np.asarray(layers.dropout(y, key, 0.25, salt=1))
  assert set(np.unique(out)) == {0.0, 4.0}                              # 3 / (1 - 0.25)
  np.testing.assert_allclose((out != 0).mean(), 0.75, atol=0.02)
  same = np.asarray(layers.dropout(y, key, 0.25, salt=1))
  other = np.asarray(layers.dropout(y, key, 0.25, salt=2))
  np.testing.assert_array_equal(out, same)
  assert (out != other).mean() > 0.2
  keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, 1), 0.75, (100, 100)))
  np.testing.assert_array_equal(out != 0, keep)
  assert layers.dropout(y.astype(jnp.bfloat16), key, 0.5).dtype == jnp.bfloat16


@pytest.mark.parametrize("rate", [0.1, 0.9])
def test_dropout_keeps_the_mean(rate):
  y = jnp.asarray(_normal((200, 200), seed=11) + 1.0)
  out = np.asarray(layers.dropout(y, jax.random.key(3), rate))
  np.testing.assert_allclose(out.mean(), np.asarray(y).mean(), rtol=0.1 if rate > 0.5 else 0.02)
