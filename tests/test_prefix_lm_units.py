"""The prefix LM's Attention and Block, and the toy LM's Block, on their own: each against a
float64 numpy computation from the module's own weights (rotary positions, grouped-query heads,
the prefix-LM mask with padding, SwiGLU / GELU MLPs, residuals), the KV-cache path against the full
one, and what each position may and may not depend on."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.models import toy_lm
from vp_jax.models.prefix_lm.attention import Attention, prefix_lm_mask
from vp_jax.models.prefix_lm.config import SMALL_VOCAB, PrefixLMConfig
from vp_jax.models.prefix_lm.model import Block

# D 16, H 4 query heads over G 2 kv heads, head dim K 6 (not D / H), SwiGLU width 24.
CFG = PrefixLMConfig(vocab=SMALL_VOCAB, embed_dim=16, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=6, mlp_dim=24, text_dim=8, rope_base=100.0)
TOY = toy_lm.ToyLMConfig(vocab_size=8, max_len=8, num_layers=1, embed_dim=16, num_heads=4,
                         mlp_dim=24)
B, L = 2, 7
PREFIX = np.asarray([3, 5], np.int32)                                    # per row
VALID = np.ones((B, L), bool)
VALID[1, 2] = False                                                      # a masked text slot
VALID[0, 6] = False                                                      # padding at the end


def _build(cls, cfg, seed=0):
  with nnx.use_eager_sharding(False):
    return cls(cfg, rngs=nnx.Rngs(seed))


def _x(seed=1, shape=(B, L, 16)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _np(p):
  return np.asarray(p[...], np.float64)


# -- float64 references -------------------------------------------------------------------------
def _rotary(x, positions, base):
  """x [B, L, N, K] rotated pairwise (i, i + K/2) by angle position * base^(-2i/K)."""
  k = x.shape[-1]
  out = np.empty_like(x)
  for i in range(k // 2):
    angle = positions[:, :, None] * base ** (-2.0 * i / k)               # [B, L, 1]
    a, b = x[..., i], x[..., i + k // 2]
    out[..., i] = a * np.cos(angle) - b * np.sin(angle)
    out[..., i + k // 2] = b * np.cos(angle) + a * np.sin(angle)
  return out


def _rms(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _mask(prefix, valid):
  """[B, L, L]: key j visible to query i if valid and (j <= i or j < prefix), or j == i."""
  b, n = valid.shape
  m = np.zeros((b, n, n), bool)
  for r in range(b):
    for i in range(n):
      for j in range(n):
        m[r, i, j] = (valid[r, j] and (j <= i or j < prefix[r])) or i == j
  return m


def _attention(attn, x, positions, mask):
  """Hand-written grouped-query softmax attention with the module's weights -> (out, q, k, v)."""
  cfg = attn.cfg
  q = _rotary(np.einsum("bld,dhk->blhk", x, _np(attn.query)), positions, cfg.rope_base)
  k = _rotary(np.einsum("bld,dgk->blgk", x, _np(attn.key)), positions, cfg.rope_base)
  v = np.einsum("bld,dgk->blgk", x, _np(attn.value))
  heads = []
  for h in range(cfg.num_heads):
    g = h // (cfg.num_heads // cfg.kv_heads)                             # query head -> kv head
    logits = np.einsum("bik,bjk->bij", q[:, :, h], k[:, :, g]) / np.sqrt(cfg.rope_dim)
    probs = _softmax(np.where(mask, logits, -np.inf))
    heads.append(np.einsum("bij,bjk->bik", probs, v[:, :, g]))
  out = np.einsum("blhk,hkd->bld", np.stack(heads, 2), _np(attn.out))
  return out, q, k, v


def _silu(z):
  return z / (1 + np.exp(-z))


def _gelu_tanh(z):
  return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))


# -- Attention ----------------------------------------------------------------------------------
def _attend(attn, x, positions, prefix=PREFIX, valid=VALID):
  mask = prefix_lm_mask(x.shape[1], jnp.asarray(prefix), jnp.asarray(valid))
  q, k, v = attn.project(jnp.asarray(x), jnp.asarray(positions))
  return np.asarray(attn.attend(q, k, v, mask), np.float64)


def test_attention_parameter_shapes_and_axes():
  attn = _build(Attention, CFG)
  shapes = {n: (getattr(attn, n).shape, getattr(attn, n).get_metadata()["out_sharding"])
            for n in ("query", "key", "value", "out")}
  assert shapes == {"query": ((16, 4, 6), ("embed", "heads", "kv")),
                    "key": ((16, 2, 6), ("embed", "heads", "kv")),
                    "value": ((16, 2, 6), ("embed", "heads", "kv")),
                    "out": ((4, 6, 16), ("heads", "kv", "embed"))}


def test_attention_project_matches_rotated_projections():
  attn = _build(Attention, CFG)
  x = _x()
  positions = np.stack([np.arange(L), np.arange(L) + 5]).astype(np.int32)   # row 1 offset by 5
  q, k, v = attn.project(jnp.asarray(x), jnp.asarray(positions))
  assert q.shape == (B, L, 4, 6) and k.shape == (B, 2, L, 6) and v.shape == (B, 2, L, 6)
  _, q_want, k_want, v_want = _attention(attn, x.astype(np.float64), positions,
                                         np.ones((B, L, L), bool))
  np.testing.assert_allclose(np.asarray(q), q_want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(k), np.swapaxes(k_want, 1, 2), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(v), np.swapaxes(v_want, 1, 2), rtol=1e-5, atol=1e-5)
  # position 0 is not rotated: q there is the plain projection
  np.testing.assert_allclose(np.asarray(q)[0, 0], np.einsum("d,dhk->hk", x[0, 0], _np(attn.query)),
                             rtol=1e-5, atol=1e-6)


def test_attention_equals_hand_written_prefix_lm_attention():
  attn = _build(Attention, CFG)
  x = _x()
  positions = np.broadcast_to(np.arange(L), (B, L)).astype(np.int32)
  got = _attend(attn, x, positions)
  want, *_ = _attention(attn, x.astype(np.float64), positions, _mask(PREFIX, VALID))
  assert got.shape == (B, L, 16)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # a wrong mask (plain causal) gives different numbers at prefix positions
  causal, *_ = _attention(attn, x.astype(np.float64), positions, _mask(np.zeros(B, int), VALID))
  assert np.abs(causal[0, 0] - want[0, 0]).max() > 1e-3


def test_attention_dependencies_follow_the_prefix_lm_mask():
  attn = _build(Attention, CFG)
  x = _x()
  positions = np.broadcast_to(np.arange(L), (B, L)).astype(np.int32)
  base = _attend(attn, x, positions)

  def changed(row, pos):
    x2 = x.copy()
    x2[row, pos] += 3.0
    return np.abs(_attend(attn, x2, positions) - base).max(-1)          # [B, L]

  d = changed(0, 3)          # row 0, prefix 3: the first output, seen by itself and later ones
  assert (d[0, :3] < 1e-6).all() and (d[0, 3:] > 1e-3).all()    # (the padding query 6 included)
  assert (d[1] == 0).all()                                       # other rows untouched
  d = changed(0, 2)          # row 0: the last prefix position is seen by every query
  assert (d[0] > 1e-3).all()
  d = changed(1, 4)          # row 1, prefix 5: the last prefix position, seen by every query
  assert (d[1] > 1e-3).all()
  d = changed(1, 2)          # row 1: an invalid key changes no one but itself
  assert (d[1, [0, 1, 3, 4, 5, 6]] < 1e-6).all() and d[1, 2] > 1e-3


def test_attend_cache_equals_full_attention_at_the_last_position():
  attn = _build(Attention, CFG)
  x = _x(seed=4)
  prefix = np.asarray([2, 2], np.int32)
  positions = np.broadcast_to(np.arange(L), (B, L)).astype(np.int32)
  full = _attend(attn, x, positions, prefix=prefix)
  q, k, v = attn.project(jnp.asarray(x), jnp.asarray(positions))        # k, v [B, G, L, K]
  s, g, kd = 10, CFG.kv_heads, CFG.rope_dim                              # 3 unused cache slots
  junk = np.random.default_rng(9).normal(size=(B * g, s - L, kd)) * 100
  keys = np.concatenate([np.swapaxes(np.asarray(k), 2, 3).reshape(B * g, kd, L),
                         np.swapaxes(junk, 1, 2)], axis=2)               # [B*G, K, S]
  values = np.concatenate([np.asarray(v).reshape(B * g, L, kd), junk], axis=1)   # [B*G, S, K]
  for t in (L - 1, 4):
    mask = np.zeros((B, 1, s), bool)
    mask[:, 0, :t + 1] = VALID[:, :t + 1]
    mask[:, 0, t] = True
    got = attn.attend_cache(q[:, t:t + 1], jnp.asarray(keys, jnp.float32),
                            jnp.asarray(values, jnp.float32), jnp.asarray(mask))
    assert got.shape == (B, 1, 16)
    np.testing.assert_allclose(np.asarray(got)[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


# -- prefix LM Block ----------------------------------------------------------------------------
def _randomize_scales(block, seed=5):
  rng = np.random.default_rng(seed)
  for norm in (block.attn_norm, block.mlp_norm):
    norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, norm.scale.shape), jnp.float32)


def _block_call(block, x, positions, prefix=PREFIX, valid=VALID, key=None):
  mask = prefix_lm_mask(x.shape[1], jnp.asarray(prefix), jnp.asarray(valid))
  return block(jnp.asarray(x), jnp.asarray(positions), mask, key)


def test_prefix_lm_block_equals_prenorm_attention_and_swiglu():
  block = _build(Block, CFG)
  _randomize_scales(block)
  x = _x(seed=2)
  positions = np.broadcast_to(np.arange(L), (B, L)).astype(np.int32)
  out, (k, v) = _block_call(block, x, positions)
  x64 = x.astype(np.float64)
  h = _rms(x64, _np(block.attn_norm.scale))
  attn, _, k_want, v_want = _attention(block.attn, h, positions, _mask(PREFIX, VALID))
  x1 = x64 + attn
  h = _rms(x1, _np(block.mlp_norm.scale))
  mlp = (_silu(h @ _np(block.mlp_gate.kernel)) * (h @ _np(block.mlp_up.kernel))) @ _np(
      block.mlp_out.kernel)
  assert out.shape == (B, L, 16) and k.shape == v.shape == (B, 2, L, 6)
  np.testing.assert_allclose(np.asarray(out), x1 + mlp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(k), np.swapaxes(k_want, 1, 2), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(v), np.swapaxes(v_want, 1, 2), rtol=1e-5, atol=1e-5)


def test_prefix_lm_block_with_zero_output_projections_is_the_identity():
  block = _build(Block, CFG)
  block.attn.out[...] = jnp.zeros_like(block.attn.out[...])
  block.mlp_out.kernel[...] = jnp.zeros_like(block.mlp_out.kernel[...])
  x = _x(seed=3)
  out, _ = _block_call(block, x, np.broadcast_to(np.arange(L), (B, L)))
  np.testing.assert_array_equal(np.asarray(out), x)


def test_prefix_lm_block_dropout_only_with_a_key():
  x = _x(seed=6)
  positions = np.broadcast_to(np.arange(L), (B, L))
  plain, _ = _block_call(_build(Block, CFG), x, positions)
  dropped = _build(Block, dataclasses.replace(CFG, dropout=0.5))
  no_key, _ = _block_call(dropped, x, positions)
  np.testing.assert_allclose(np.asarray(no_key), np.asarray(plain), rtol=1e-6, atol=1e-6)
  a, _ = _block_call(dropped, x, positions, key=jax.random.key(1))
  b, _ = _block_call(dropped, x, positions, key=jax.random.key(1))
  c, _ = _block_call(dropped, x, positions, key=jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(plain)).max() > 1e-2
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-2


def test_prefix_lm_block_finish_is_residual_then_mlp():
  block = _build(Block, CFG)
  x, a = _x(seed=7), _x(seed=8)
  got = np.asarray(block.finish(jnp.asarray(x), jnp.asarray(a), None))
  x1 = x.astype(np.float64) + a
  h = _rms(x1, 1.0)
  mlp = (_silu(h @ _np(block.mlp_gate.kernel)) * (h @ _np(block.mlp_up.kernel))) @ _np(
      block.mlp_out.kernel)
  np.testing.assert_allclose(got, x1 + mlp, rtol=1e-5, atol=1e-5)


# -- toy LM Block -------------------------------------------------------------------------------
def test_toy_block_equals_causal_attention_and_gelu_mlp():
  block = _build(toy_lm.Block, TOY)
  _randomize_scales(block, seed=9)
  assert block.qkv.shape == (16, 3, 4, 4) and block.out.shape == (4, 4, 16)
  x = _x(seed=10, shape=(2, 6, 16))
  got = np.asarray(block(jnp.asarray(x), None))
  x64 = x.astype(np.float64)
  h = _rms(x64, _np(block.attn_norm.scale))
  qkv = np.einsum("bld,dthk->blthk", h, _np(block.qkv))
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                     # [B, L, H, K]
  logits = np.einsum("bihk,bjhk->bhij", q, k) / np.sqrt(4)
  logits = np.where(np.tril(np.ones((6, 6), bool)), logits, -np.inf)
  attn = np.einsum("bhij,bjhk->bihk", _softmax(logits), v)
  x1 = x64 + np.einsum("bihk,hkd->bid", attn, _np(block.out))
  h = _rms(x1, _np(block.mlp_norm.scale))
  want = x1 + _gelu_tanh(h @ _np(block.mlp_in.kernel)) @ _np(block.mlp_out.kernel)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_toy_block_is_causal_and_residual():
  block = _build(toy_lm.Block, TOY)
  x = _x(seed=11, shape=(1, 6, 16))
  base = np.asarray(block(jnp.asarray(x), None))
  x2 = x.copy()
  x2[0, 3] += 2.0
  d = np.abs(np.asarray(block(jnp.asarray(x2), None)) - base).max(-1)[0]
  assert (d[:3] < 1e-6).all() and (d[3:] > 1e-3).all()
  block.out[...] = jnp.zeros_like(block.out[...])
  block.mlp_out.kernel[...] = jnp.zeros_like(block.mlp_out.kernel[...])
  np.testing.assert_array_equal(np.asarray(block(jnp.asarray(x), jax.random.key(0))), x)
