"""The T5 encoder layer and the tokenizer's output type on their own: T5Layer against a float64
numpy T5 v1.1 block (pre-norm self-attention without 1/sqrt(K), additive relative-position and
padding bias, gated-GELU MLP) from its own weights, padding independence and the residual path;
TokenizedText's invariants (EOS, padding mask, truncation count) as `Tokenizer.encode` fills it."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.demo import train_sentencepiece
from vp_jax.text.model import T5Encoder, T5Layer
from vp_jax.text.tokenizer import EOS_ID, PAD_ID, TokenizedText, Tokenizer

# D 16, H 2 heads of K 6 (inner 12 != D), gated MLP width 20; eps large enough to matter.
CFG = T5EncoderConfig(name="unit", vocab_size=16, d_model=16, num_heads=2, head_dim=6, d_ff=20,
                      num_layers=1, eps=1e-3)
B, L = 2, 5


def _layer(cfg=CFG, seed=0):
  with nnx.use_eager_sharding(False):
    return T5Layer(cfg, rngs=nnx.Rngs(seed))


def _np(p):
  return np.asarray(p[...], np.float64)


def _inputs(seed=1):
  """x [B, L, D]; bias [B, H, L, L] = random relative-position-like bias + padding (row 1 has its
  last two positions padded); the padding mask [B, L]."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, L, CFG.d_model)).astype(np.float32)
  mask = np.ones((B, L), bool)
  mask[1, 3:] = False
  bias = rng.normal(size=(1, CFG.num_heads, L, L)) + np.where(mask, 0.0, -1e9)[:, None, None, :]
  return x, bias.astype(np.float32), mask


def _reference(layer, x, bias):
  """T5 v1.1 encoder block in float64 from the layer's weights."""
  eps = layer.cfg.eps

  def norm(z, scale):
    return z / np.sqrt(np.mean(z * z, -1, keepdims=True) + eps) * scale

  x = x.astype(np.float64)
  h = norm(x, _np(layer.attn_norm.scale))
  q, k, v = (np.einsum("bld,dhk->bhlk", h, _np(w)) for w in (layer.q, layer.k, layer.v))
  logits = np.einsum("bhik,bhjk->bhij", q, k) + bias                      # no 1 / sqrt(K)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  x = x + np.einsum("bhij,bhjk,hkd->bid", probs, v, _np(layer.o))
  h = norm(x, _np(layer.mlp_norm.scale))
  a = h @ _np(layer.wi_0)
  gelu = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))   # gelu_new
  return x + (gelu * (h @ _np(layer.wi_1))) @ _np(layer.wo)


def _randomize_scales(layer, seed=3):
  rng = np.random.default_rng(seed)
  for norm in (layer.attn_norm, layer.mlp_norm):
    norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, norm.scale.shape), jnp.float32)


# -- T5Layer ------------------------------------------------------------------------------------
def test_t5_layer_parameters_have_t5_shapes_and_no_biases():
  layer = _layer()
  shapes = {n: v.shape for n, v in nnx.to_flat_state(nnx.state(layer, nnx.Param))}
  assert shapes == {("attn_norm", "scale"): (16,), ("mlp_norm", "scale"): (16,),
                    ("q",): (16, 2, 6), ("k",): (16, 2, 6), ("v",): (16, 2, 6),
                    ("o",): (2, 6, 16), ("wi_0",): (16, 20), ("wi_1",): (16, 20),
                    ("wo",): (20, 16)}
  # T5's init: the query's std carries the 1 / sqrt(K) logit scale, 1 / sqrt(D K) = 0.1021
  q = np.asarray(_layer(T5EncoderConfig(d_model=64, num_heads=8, head_dim=16, d_ff=8,
                                        num_layers=1)).q[...])
  np.testing.assert_allclose(q.std(), (64 * 16) ** -0.5, rtol=0.05)


def test_t5_layer_equals_hand_written_t5_block():
  layer = _layer()
  _randomize_scales(layer)
  x, bias, _ = _inputs()
  got = np.asarray(layer(jnp.asarray(x), jnp.asarray(bias)))
  assert got.shape == (B, L, 16) and got.dtype == np.float32
  np.testing.assert_allclose(got, _reference(layer, x, bias), rtol=1e-5, atol=1e-5)


def test_t5_layer_does_not_scale_logits_and_uses_the_bias():
  layer = _layer()
  x, bias, _ = _inputs()
  got = np.asarray(layer(jnp.asarray(x), jnp.asarray(bias)))
  # The same block with the usual 1/sqrt(K) would differ (K = 6), as would one without the bias.
  scaled = _layer()
  scaled.q[...] = layer.q[...] / np.sqrt(6.0)
  assert np.abs(_reference(scaled, x, bias) - got).max() > 1e-3
  no_rel = bias - np.where(bias < -1e8, 0.0, bias)                     # padding part only
  assert np.abs(_reference(layer, x, no_rel) - got).max() > 1e-3
  # A bias that is constant along the key axis cancels in the softmax.
  shifted = bias + np.arange(L, dtype=np.float32)[None, None, :, None]
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x), jnp.asarray(shifted))), got,
                             rtol=1e-5, atol=1e-5)


def test_t5_layer_padded_keys_do_not_reach_real_positions():
  layer = _layer()
  x, bias, mask = _inputs()
  base = np.asarray(layer(jnp.asarray(x), jnp.asarray(bias)))
  x2 = x.copy()
  x2[1, 3:] = 50.0 * np.random.default_rng(7).normal(size=(2, 16))     # garbage in the padding
  got = np.asarray(layer(jnp.asarray(x2), jnp.asarray(bias)))
  np.testing.assert_allclose(got[mask], base[mask], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got[0], base[0])
  # without the padding bias the real positions would see it
  unmasked = np.where(bias < -1e8, 0.0, bias)
  a = np.asarray(layer(jnp.asarray(x), jnp.asarray(unmasked)))
  b = np.asarray(layer(jnp.asarray(x2), jnp.asarray(unmasked)))
  assert np.abs(a[1, :3] - b[1, :3]).max() > 1e-2


def test_t5_layer_with_zero_output_weights_is_the_identity():
  layer = _layer()
  layer.o[...] = jnp.zeros_like(layer.o[...])
  layer.wo[...] = jnp.zeros_like(layer.wo[...])
  x, bias, _ = _inputs()
  np.testing.assert_array_equal(np.asarray(layer(jnp.asarray(x), jnp.asarray(bias))), x)


def test_t5_layer_bfloat16_weights_compute_with_the_rounded_values():
  cfg = dataclasses.replace(CFG, param_dtype="bfloat16")
  layer = _layer(cfg)
  assert layer.q.dtype == layer.wo.dtype == jnp.bfloat16
  assert layer.attn_norm.scale.dtype == jnp.float32
  x, bias, _ = _inputs()
  got = np.asarray(layer(jnp.asarray(x), jnp.asarray(bias)))
  assert got.dtype == np.float32                                        # compute stays float32
  np.testing.assert_allclose(got, _reference(layer, x, bias), rtol=1e-5, atol=1e-5)


def test_t5_layer_is_the_encoders_block():
  """A one-layer T5Encoder = final_norm(T5Layer(embedding, position_bias + padding))."""
  cfg = dataclasses.replace(CFG, eps=1e-6)
  with nnx.use_eager_sharding(False):
    enc = T5Encoder(cfg, rngs=nnx.Rngs(4))
  ids = jnp.asarray([[5, 3, 9, 1, 0], [7, 7, 1, 0, 0]], jnp.int32)
  mask = ids != 0
  got = np.asarray(enc(ids, mask))
  layer = _layer(cfg)
  nnx.update(layer, jax.tree.map(lambda a: a[0], nnx.state(enc.layers, nnx.Param)))  # layer 0
  x = np.asarray(enc.token_embed[...])[np.asarray(ids)]
  bias = (np.asarray(enc.position_bias(L))[None]
          + np.where(np.asarray(mask), 0.0, -1e9)[:, None, None, :])
  h = _reference(layer, x, bias)
  want = h / np.sqrt(np.mean(h * h, -1, keepdims=True) + 1e-6)           # final norm, scale 1
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- TokenizedText ------------------------------------------------------------------------------
TEXTS = ["a red circle moves left", "a blue square", "a small green cross drifts up slowly",
         "a red square moves left over a blue background"]


@pytest.fixture(scope="module")
def tokenizer():
  captions = [f"{s} {c} {o} moves {d}" for s in ("a small", "a large", "a")
              for c in ("red", "blue", "green") for o in ("circle", "square", "cross")
              for d in ("left", "right", "up", "down")] + TEXTS
  return Tokenizer(train_sentencepiece(captions, vocab_size=320), max_length=6)


def test_tokenized_text_fields_and_invariants(tokenizer):
  texts = TEXTS + [""]
  out = tokenizer.encode(texts)
  assert isinstance(out, TokenizedText)
  assert out.ids.shape == out.mask.shape == (5, 6) and out.num_truncated.shape == (5,)
  assert (out.ids.dtype, out.mask.dtype, out.num_truncated.dtype) == (np.int32, bool, np.int32)
  pieces = [tokenizer.pieces(t) for t in texts]
  kept = [min(len(p), 5) for p in pieces]                                # max_length - 1 pieces
  assert kept[-1] == 0 and max(len(p) for p in pieces) > 5              # both ends exercised
  np.testing.assert_array_equal(out.num_truncated, [len(p) - k for p, k in zip(pieces, kept)])
  np.testing.assert_array_equal(out.mask.sum(1), np.asarray(kept) + 1)
  for row, (p, k) in enumerate(zip(pieces, kept)):
    np.testing.assert_array_equal(out.mask[row], np.arange(6) < k + 1)  # a prefix of the row
    np.testing.assert_array_equal(out.ids[row, :k], p[:k])
    assert out.ids[row, k] == EOS_ID and (out.ids[row, k + 1:] == PAD_ID).all()
  # no real piece is PAD or EOS: the mask is recoverable from the ids
  np.testing.assert_array_equal(out.mask, np.cumsum(out.ids == EOS_ID, axis=1)
                                - (out.ids == EOS_ID) == 0)
  untruncated = [i for i in range(5) if out.num_truncated[i] == 0]
  assert untruncated and all(tokenizer.decode(out.ids[i]) == texts[i] for i in untruncated)


def test_tokenized_text_is_frozen_and_empty_batches_keep_their_shapes(tokenizer):
  out = tokenizer.encode(["a red circle"])
  with pytest.raises(dataclasses.FrozenInstanceError):
    out.ids = np.zeros((1, 6), np.int32)
  empty = tokenizer.encode([])
  assert empty.ids.shape == empty.mask.shape == (0, 6) and empty.num_truncated.shape == (0,)
  assert [f.name for f in dataclasses.fields(TokenizedText)] == ["ids", "mask", "num_truncated"]


@pytest.mark.parametrize("ids, mask, truncated, match", [
    (np.zeros((2, 6), np.int32), np.ones((2, 5), bool), np.zeros(2, np.int32), r"mask \(2, 5\)"),
    (np.zeros((2, 6), np.int32), np.ones((2, 6), bool), np.zeros(3, np.int32),
     r"num_truncated \(3,\)"),
    (np.zeros(6, np.int32), np.ones(6, bool), np.zeros(1, np.int32), r"ids \(6,\)"),
    (np.zeros((2, 6), np.float32), np.ones((2, 6), bool), np.zeros(2, np.int32), "float32"),
    (np.zeros((2, 6), np.int32), np.ones((2, 6), np.int32), np.zeros(2, np.int32),
     "mask bool"),
])
def test_tokenized_text_rejects_fields_that_disagree(ids, mask, truncated, match):
  with pytest.raises(ValueError, match=match):
    TokenizedText(ids=ids, mask=mask, num_truncated=truncated)
