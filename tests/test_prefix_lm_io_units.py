"""PrefixLM.embed_inputs and project_logits on their own: against the model's own embedding table,
text projection and output kernel, tied and untied, float32 and bfloat16."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.prefix_lm.config import SMALL_VOCAB, PrefixLMConfig
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.sequence.vocab import Special


def _np(p):
  return np.asarray(p[...], np.float64)


# -- PrefixLM.embed_inputs / project_logits -------------------------------------------------------
LM = PrefixLMConfig(vocab=SMALL_VOCAB, embed_dim=16, num_layers=1, num_heads=2, mlp_dim=16,
                    text_dim=8)
V = SMALL_VOCAB.size                                                     # 2304 ids


def _lm(**overrides):
  cfg = PrefixLMConfig(**{**LM.__dict__, **overrides})
  with nnx.use_eager_sharding(False):
    return nnx.jit(lambda: PrefixLM(cfg, rngs=nnx.Rngs(0)))()  # one compile, not op by op


@pytest.fixture(scope="module")
def lm():
  return _lm()


@nnx.jit
def _embed(model, tokens, text, text_mask):
  return model.embed_inputs(tokens, text, text_mask)


@nnx.jit
def _project(model, hidden):
  return model.project_logits(hidden)


T = Special.TEXT_SLOT
VIS = SMALL_VOCAB.visual_offset
# Row 0: three contiguous text slots, then visual ids and a PAD. Row 1: text slots apart, no PAD.
TOKENS = np.array([[Special.BOS, Special.TASK_VIDEO, T, T, T, VIS + 5, VIS + 700, Special.PAD],
                   [Special.BOS, T, VIS + 1, T, VIS + 1023, T, Special.EOS, VIS]], np.int32)
TEXT = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
TEXT_MASK = np.array([[True, True, False], [True, False, True]])


def test_embed_inputs_token_rows_scaled_and_text_slots_projected(lm):
  x, valid = _embed(lm, jnp.asarray(TOKENS), jnp.asarray(TEXT), jnp.asarray(TEXT_MASK))
  assert x.shape == (2, 8, 16) and x.dtype == jnp.float32
  assert valid.shape == (2, 8) and valid.dtype == jnp.bool_
  table, proj = _np(lm.embed.embedding), _np(lm.text_proj.kernel)        # [V, D], [Dt, D]
  projected = TEXT.astype(np.float64) @ proj                              # [B, 3, D]
  want = table[TOKENS] * 4.0                                              # sqrt(16)
  # The n-th TEXT_SLOT of a row takes text[:, n].
  want[0, 2:5] = projected[0]
  want[1, [1, 3, 5]] = projected[1]
  np.testing.assert_allclose(np.asarray(x), want, rtol=1e-5, atol=1e-6)
  # Invalid keys: PAD, and text slots whose text_mask is False (row 0 slot 2, row 1 slot 1).
  np.testing.assert_array_equal(np.asarray(valid), [
      [True, True, True, True, False, True, True, False],
      [True, True, True, False, True, True, True, True]])


def test_embed_inputs_without_text_or_without_a_text_mask(lm):
  x, valid = _embed(lm, jnp.asarray(TOKENS), None, None)
  table = _np(lm.embed.embedding)
  # No text: text slots keep the TEXT_SLOT row of the table and are never valid keys.
  np.testing.assert_allclose(np.asarray(x), table[TOKENS] * 4.0, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(valid), (TOKENS != Special.PAD) & (TOKENS != T))
  # Text without a mask: every text slot is valid.
  x2, valid2 = _embed(lm, jnp.asarray(TOKENS), jnp.asarray(TEXT), None)
  np.testing.assert_array_equal(np.asarray(valid2), TOKENS != Special.PAD)
  x1, _ = _embed(lm, jnp.asarray(TOKENS), jnp.asarray(TEXT), jnp.asarray(TEXT_MASK))
  np.testing.assert_array_equal(np.asarray(x2), np.asarray(x1))   # the mask never changes x


def test_embed_inputs_slots_past_the_text_keep_their_token_row_and_are_invalid(lm):
  """Text of 2 rows for rows with 3 text slots: the third slot takes no text (it used to repeat
  text[:, 1]) and is not a valid key, with or without a text mask."""
  text2 = TEXT[:, :2]
  table, proj = _np(lm.embed.embedding), _np(lm.text_proj.kernel)
  projected = text2.astype(np.float64) @ proj                             # [B, 2, D]
  want = table[TOKENS] * 4.0
  want[0, 2:4] = projected[0]                                             # slot 2 (pos 4): table
  want[1, [1, 3]] = projected[1]                                          # slot 2 (pos 5): table
  for mask in (None, TEXT_MASK[:, :2]):
    x, valid = _embed(lm, jnp.asarray(TOKENS), jnp.asarray(text2),
                      None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-5, atol=1e-6)
    want_valid = TOKENS != Special.PAD
    want_valid[0, 4] = want_valid[1, 5] = False                           # past the text
    if mask is not None:
      want_valid[1, 3] = False                                            # text_mask[1, 1]
    np.testing.assert_array_equal(np.asarray(valid), want_valid)


def test_embed_inputs_eager_matches_jit(lm):
  eager = lm.embed_inputs(jnp.asarray(TOKENS), jnp.asarray(TEXT), jnp.asarray(TEXT_MASK))
  jitted = _embed(lm, jnp.asarray(TOKENS), jnp.asarray(TEXT), jnp.asarray(TEXT_MASK))
  np.testing.assert_allclose(np.asarray(jitted[0]), np.asarray(eager[0]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(jitted[1]), np.asarray(eager[1]))


def test_project_logits_tied_is_hidden_times_the_embedding_table(lm):
  assert lm.cfg.tie_embeddings and not hasattr(lm, "unembed")
  hidden = np.random.default_rng(1).normal(size=(2, 3, 16)).astype(np.float32)
  logits = _project(lm, jnp.asarray(hidden))
  assert logits.shape == (2, 3, V) and logits.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logits), hidden @ _np(lm.embed.embedding).T, rtol=1e-4,
                             atol=1e-5)
  # Any leading shape: one position [D] -> [V].
  one = _project(lm, jnp.asarray(hidden[1, 2]))
  assert one.shape == (V,)
  np.testing.assert_allclose(np.asarray(one), np.asarray(logits)[1, 2], rtol=1e-5, atol=1e-6)


def test_project_logits_untied_uses_the_output_kernel():
  lm = _lm(tie_embeddings=False)
  assert lm.unembed.kernel.shape == (16, V)
  hidden = np.random.default_rng(2).normal(size=(4, 16)).astype(np.float32)
  logits = np.asarray(_project(lm, jnp.asarray(hidden)))
  assert logits.shape == (4, V)
  np.testing.assert_allclose(logits, hidden @ _np(lm.unembed.kernel), rtol=1e-4, atol=1e-5)
  # Not the embedding table: the two are separate parameters.
  assert np.abs(logits - hidden @ _np(lm.embed.embedding).T).max() > 0.1


def test_project_logits_and_embed_inputs_in_bfloat16():
  lm = _lm(dtype="bfloat16")
  assert lm.embed.embedding[...].dtype == jnp.float32                   # parameters stay float32
  hidden = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)
  logits = _project(lm, jnp.asarray(hidden))
  assert logits.dtype == jnp.bfloat16                                    # the compute dtype
  bf = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64)
  want = bf(hidden) @ bf(_np(lm.embed.embedding)).T
  np.testing.assert_allclose(np.asarray(logits, np.float64), want, rtol=2e-2, atol=2e-2)
  x, _ = _embed(lm, jnp.asarray(TOKENS), None, None)
  assert x.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(x, np.float64), bf(_np(lm.embed.embedding))[TOKENS] * 4.0,
                             rtol=1e-2)
