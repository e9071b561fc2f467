"""Direct tests of public methods and properties that other tests only reach through callers:
Scene.camera_velocity (the exact pan per camera label, and the rendered background moving by it),
PrefixLM.embed_inputs / project_logits (against the model's own embedding table, text projection
and output kernel), SoundStream.reconstruct / discriminate (against the codec and discriminators
composed by hand, with exact shapes), Vocabulary.visual_offset (the documented layout),
EmbeddingCache.put (what it writes, what `get` rebuilds, what it refuses) and
T5EncoderConfig.inner_dim (num_heads * head_dim, the width of the attention parameters)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.data.synthetic.render import render
from vp_jax.data.synthetic.scene import CAMERA_SPEED, CAMERAS, Scene
from vp_jax.models.prefix_lm.config import SMALL_VOCAB, PrefixLMConfig
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.model import init_model
from vp_jax.sequence.vocab import NUM_SPECIAL, PAPER, Special, Vocabulary
from vp_jax.text.cache import EmbeddingCache
from vp_jax.text.config import PRESETS as T5_PRESETS
from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.model import T5Layer


def _np(p):
  return np.asarray(p[...], np.float64)


# -- Scene.camera_velocity ------------------------------------------------------------------------
def _scene(camera):
  # Phases chosen so that no pixel centre lies on a checker cell edge (0.125-unit cells) at 25
  # pixels per unit, before or after a shift by whole pixels.
  return Scene(extent=(1.0, 1.0), background="gray", pattern="checker",
               pattern_phase=(0.013, 0.029), camera=camera, objects=())


@pytest.mark.parametrize("camera,velocity", [
    ("none", (0.0, 0.0)), ("left", (-0.12, 0.0)), ("right", (0.12, 0.0)), ("up", (0.0, -0.12)),
    ("down", (0.0, 0.12))])
def test_camera_velocity_per_label(camera, velocity):
  assert CAMERA_SPEED == 0.12
  got = _scene(camera).camera_velocity
  assert isinstance(got, tuple) and len(got) == 2
  assert got == pytest.approx(velocity, abs=1e-15)


def test_camera_velocity_covers_every_camera_label():
  speeds = {c: float(np.hypot(*_scene(c).camera_velocity)) for c in CAMERAS}
  assert speeds == pytest.approx({"none": 0.0, "left": 0.12, "right": 0.12, "up": 0.12,
                                  "down": 0.12})


@pytest.mark.parametrize("camera", ["left", "right", "up", "down"])
def test_background_moves_by_the_camera_velocity_between_frames(camera):
  # 25 px per unit at 1 fps: the camera moves 0.12 units = exactly 3 px per frame. Frame t shows
  # the world point that frame 0 showed at pixel + velocity * t (the finite difference of the
  # camera position), and the background's flow is the opposite of the camera's velocity.
  vx, vy = _scene(camera).camera_velocity
  frames, _, flow = render(_scene(camera), 3, 25, 25, fps=1.0)
  sx, sy = int(round(vx * 25)), int(round(vy * 25))
  assert abs(sx) + abs(sy) == 3
  for t in (1, 2):
    dx, dy = sx * t, sy * t
    # frames[t][y, x] == frames[0][y + dy, x + dx] wherever both are inside the frame.
    now = frames[t][max(-dy, 0):25 - max(dy, 0), max(-dx, 0):25 - max(dx, 0)]
    then = frames[0][max(dy, 0):25 + min(dy, 0), max(dx, 0):25 + min(dx, 0)]
    np.testing.assert_array_equal(now, then)
    wrong = frames[0][max(-dy, 0):25 - max(dy, 0), max(-dx, 0):25 - max(dx, 0)]
    assert np.any(now != wrong)                       # the frames do move
  np.testing.assert_allclose(flow[..., 0], -vx * 25, atol=1e-6)
  np.testing.assert_allclose(flow[..., 1], -vy * 25, atol=1e-6)


def test_background_is_still_without_a_camera():
  frames, _, flow = render(_scene("none"), 2, 25, 25, fps=1.0)
  np.testing.assert_array_equal(frames[1], frames[0])
  assert not np.any(flow)


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


# -- SoundStream.reconstruct / discriminate -------------------------------------------------------
# hop 2 * 4 = 8; two STFT discriminators (windows 16, 8), two waveform scales (the second pooled).
SS = SoundStreamConfig(
    channels=2, channel_mults=(1, 2), strides=(2, 4), dilations=(1,), residual_kernel=3,
    embed_dim=4, num_levels=2, codebook_size=4, kmeans_iters=1, stft_disc_ffts=(16, 8),
    stft_disc_channels=2, stft_disc_layers=1, wave_disc_scales=2, wave_disc_channels=2,
    wave_disc_layers=1, wave_disc_max_width=8, mel_windows=(16,), num_mels=4)


@pytest.fixture(scope="module")
def codec():
  with nnx.use_eager_sharding(False):
    return init_model(SS)


def _wave(n, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(2, n)).astype(np.float32) * 0.3)


def test_reconstruct_is_decoder_of_the_quantized_encoding(codec):
  wave = _wave(70)                                                        # 70 = 8 * 8 + 6

  @nnx.jit
  def run(m, w):
    recon, rvq = m.reconstruct(w)
    by_hand = m.quantizer(m.encoder(w[:, :64]))                           # composed from parts
    codes = m.encode(w)
    return recon, rvq, by_hand, m.decoder(by_hand.quantized), codes, m.decode(codes)

  recon, rvq, by_hand, dec, codes, via_codes = run(codec, wave)
  assert recon.shape == (2, 64) and recon.dtype == jnp.float32         # trailing 6 samples cut
  assert rvq.codes.shape == (2, 2, 8) and rvq.quantized.shape == (2, 8, 4)
  np.testing.assert_array_equal(np.asarray(rvq.codes), np.asarray(by_hand.codes))
  np.testing.assert_allclose(np.asarray(rvq.quantized), np.asarray(by_hand.quantized), atol=1e-6)
  np.testing.assert_allclose(np.asarray(recon), np.asarray(dec), atol=1e-6)
  # ... and equal to decode(encode(x)) (codes -> sum of codebook rows -> decoder).
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(rvq.codes))
  np.testing.assert_allclose(np.asarray(recon), np.asarray(via_codes), atol=1e-5)
  assert np.abs(np.asarray(recon)).max() > 1e-3                          # not trivially zero
  # The cut samples change nothing.
  again = run(codec, jnp.concatenate([wave[:, :64], 5.0 + wave[:, 64:]], 1))[0]
  np.testing.assert_array_equal(np.asarray(again), np.asarray(recon))


def test_reconstruct_updates_the_codebook_only_when_asked():
  with nnx.use_eager_sharding(False):
    model = init_model(SS)
  before = np.asarray(model.quantizer.codebook[...])
  wave, key = _wave(64, seed=1), jax.random.key(0)

  @nnx.jit
  def steps(m, w, k):
    m.reconstruct(w, train=True, update=False, key=k)
    frozen = m.quantizer.codebook[...]
    m.reconstruct(w, train=True, update=True, key=k)                     # k-means init + EMA
    return frozen

  frozen = steps(model, wave, key)
  np.testing.assert_array_equal(np.asarray(frozen), before)
  assert np.abs(np.asarray(model.quantizer.codebook[...]) - before).max() > 1e-4


def test_reconstruct_refuses_a_wave_shorter_than_one_frame(codec):
  with pytest.raises(ValueError, match="7 samples is shorter than one frame"):
    codec.reconstruct(_wave(7))


def test_discriminate_returns_every_sub_discriminator_in_order(codec):
  wave = _wave(64, seed=2)
  out = nnx.jit(lambda m, w: m.discriminate(w))(codec, wave)
  assert isinstance(out, list) and len(out) == 4                        # 2 STFT + 2 waveform
  shapes = [(logits.shape, [f.shape for f in feats]) for logits, feats in out]
  assert shapes == [
      # STFT window 16 (hop 4): 16 frames x 9 bins -> conv stride (1, 2) -> 5 bands.
      ((2, 16, 5, 1), [(2, 16, 9, 2), (2, 16, 5, 4)]),
      # STFT window 8 (hop 2): 32 frames x 5 bins -> 3 bands.
      ((2, 32, 3, 1), [(2, 32, 5, 2), (2, 32, 3, 4)]),
      # Waveform, 64 samples: stem, one stride-4 conv (width 2 * 4 = 8), post conv.
      ((2, 16, 1), [(2, 64, 2), (2, 16, 8), (2, 16, 8)]),
      # Waveform on the 2x average-pooled wave (32 samples).
      ((2, 8, 1), [(2, 32, 2), (2, 8, 8), (2, 8, 8)]),
  ]
  direct = [
      nnx.jit(lambda m, w: m.stft_disc.discs[0](w))(codec, wave),
      nnx.jit(lambda m, w: m.stft_disc.discs[1](w))(codec, wave),
      nnx.jit(lambda m, w: m.wave_disc.discs[0](w))(codec, wave),
      nnx.jit(lambda m, w: m.wave_disc.discs[1](w))(
          codec, jnp.asarray(0.5 * (np.asarray(wave)[:, 0::2] + np.asarray(wave)[:, 1::2]))),
  ]
  for (logits, feats), (want_logits, want_feats) in zip(out, direct):
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want_logits), rtol=1e-5, atol=1e-6)
    for f, w in zip(feats, want_feats):
      np.testing.assert_allclose(np.asarray(f), np.asarray(w), rtol=1e-5, atol=1e-6)
  # The second waveform scale does not see the raw wave.
  raw = nnx.jit(lambda m, w: m.wave_disc.discs[1](w))(codec, wave[:, :32])[0]
  assert np.abs(np.asarray(raw) - np.asarray(out[3][0])).max() > 1e-4


# -- Vocabulary.visual_offset ---------------------------------------------------------------------
def test_visual_offset_is_the_first_id_after_the_256_special_tokens():
  assert NUM_SPECIAL == 256 and PAPER.visual_offset == 256
  assert max(int(t) for t in Special) < PAPER.visual_offset              # no special id above
  for vocab in (PAPER, SMALL_VOCAB, Vocabulary(visual_codes=3, audio_levels=1,
                                               audio_codes_per_level=2)):
    off = vocab.visual_offset
    assert off == 256                                    # independent of the modality sizes
    assert vocab.visual_range() == (256, 256 + vocab.visual_codes)
    assert vocab.audio_offset == off + vocab.visual_codes
    np.testing.assert_array_equal(vocab.modality_of([off - 1, off, off + vocab.visual_codes - 1]),
                                  [0, 1, 1])
    assert int(vocab.visual_to_ids(np.array(0))) == off
    assert int(vocab.ids_to_visual(np.array(off + 2))) == 2
  # The paper's layout: 256 specials + 2^18 visual + 4 x 1024 audio = 266,496 ids.
  assert PAPER.visual_offset + PAPER.visual_codes + 4 * 1024 == PAPER.size == 266_496


# -- EmbeddingCache.put ---------------------------------------------------------------------------
def _entry(n, length=6, dim=3, dtype=np.float32, seed=0):
  emb = np.zeros((length, dim), dtype)
  emb[:n] = np.random.default_rng(seed).normal(size=(n, dim)).astype(dtype)
  mask = np.arange(length) < n
  return emb, mask


def test_put_then_get_returns_the_same_arrays(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(4)
  assert cache.get("a red circle") is None
  cache.put("a red circle", emb, mask, 2)
  got_emb, got_mask, got_trunc = cache.get("a red circle")
  assert got_emb.dtype == np.float32 and got_emb.tobytes() == emb.tobytes()
  assert got_mask.dtype == bool and np.array_equal(got_mask, mask)
  assert got_trunc == 2 and isinstance(got_trunc, int)
  # float16 is kept as float16, bit for bit; an all-padding text round-trips too.
  emb16, mask16 = _entry(2, dtype=np.float16, seed=1)
  cache.put("half", emb16, mask16, 0)
  got16 = cache.get("half")
  assert got16[0].dtype == np.float16 and got16[0].tobytes() == emb16.tobytes()
  empty, none = _entry(0)
  cache.put("", empty, none, 0)
  got_empty = cache.get("")
  assert not got_empty[0].any() and got_empty[0].shape == (6, 3) and not got_empty[1].any()
  # Persisted: a new cache object for the same model reads it; another model's cache does not.
  assert EmbeddingCache(tmp_path, "enc/v1").get("a red circle")[0].tobytes() == emb.tobytes()
  assert EmbeddingCache(tmp_path, "enc/v2").get("a red circle") is None
  assert (cache.hits, cache.misses) == (0, 0)                 # put and get do not count


def test_put_writes_one_npz_with_only_the_real_rows(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(4)
  cache.put("text", emb, mask, 5)
  path = cache._path("text")
  assert os.path.dirname(os.path.dirname(path)) == cache.directory
  assert os.path.basename(os.path.dirname(path)) == os.path.basename(path)[:2]
  with np.load(path) as z:
    assert sorted(z.files) == ["mask", "model_id", "num_truncated", "rows", "text"]
    assert z["rows"].shape == (4, 3) and z["rows"].tobytes() == emb[:4].tobytes()
    np.testing.assert_array_equal(z["mask"], mask)
    assert int(z["num_truncated"]) == 5 and z["num_truncated"].dtype == np.int32
    assert str(z["text"]) == "text" and str(z["model_id"]) == "enc/v1"
  files = [f for _, _, fs in os.walk(cache.directory) for f in fs]
  assert files == [os.path.basename(path)]                    # no temporary file left behind
  # Putting again replaces the entry.
  emb2, mask2 = _entry(2, seed=3)
  cache.put("text", emb2, mask2, 0)
  got = cache.get("text")
  assert got[0].tobytes() == emb2.tobytes() and got[1].sum() == 2 and got[2] == 0
  assert len([f for _, _, fs in os.walk(cache.directory) for f in fs]) == 1


def test_put_refuses_padding_that_is_not_trailing_zeros(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(3)
  holes = mask.copy()
  holes[1] = False                                            # a gap before a real token
  with pytest.raises(ValueError, match="expected trailing padding"):
    cache.put("gap", emb, holes, 0)
  dirty = emb.copy()
  dirty[5, 0] = 1.0                                           # nonzero padded row
  with pytest.raises(ValueError, match="expected trailing padding"):
    cache.put("dirty", dirty, mask, 0)
  assert cache.get("gap") is None and cache.get("dirty") is None
  assert [f for _, _, fs in os.walk(cache.directory) for f in fs] == []


# -- T5EncoderConfig.inner_dim --------------------------------------------------------------------
def test_inner_dim_is_num_heads_times_head_dim():
  assert {n: c.inner_dim for n, c in T5_PRESETS.items()} == {
      "t5-v1_1-small": 384, "t5-v1_1-base": 768, "t5-v1_1-large": 1024, "t5-v1_1-xl": 2048,
      "t5-v1_1-xxl": 4096}
  # Not d_model: t5-v1_1-small has 6 heads of 64 in a 512-wide model.
  assert T5_PRESETS["t5-v1_1-small"].d_model == 512
  cfg = T5EncoderConfig(vocab_size=10, d_model=12, num_heads=3, head_dim=5, d_ff=7, num_layers=1)
  assert cfg.inner_dim == 15


def test_inner_dim_is_the_width_of_the_attention_parameters():
  cfg = T5EncoderConfig(vocab_size=10, d_model=12, num_heads=3, head_dim=5, d_ff=7, num_layers=1)
  with nnx.use_eager_sharding(False):
    layer = nnx.eval_shape(lambda: T5Layer(cfg, rngs=nnx.Rngs(0)))
  for name in ("q", "k", "v"):
    shape = getattr(layer, name).shape
    assert shape == (12, 3, 5) and shape[1] * shape[2] == cfg.inner_dim
  assert layer.o.shape == (3, 5, 12)
  # The parameter count uses it: 4 attention matrices of d_model x inner_dim per layer.
  per_layer = 4 * 12 * 15 + 3 * 12 * 7 + 2 * 12
  assert cfg.num_params() == 10 * 12 + per_layer + 32 * 3 + 12
