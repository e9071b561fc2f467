"""SoundStream.reconstruct and discriminate on their own: against the codec and discriminators
composed by hand, with exact shapes; the codebook updates only when asked; a too-short wave is
refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.model import init_model


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
