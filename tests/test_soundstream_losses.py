"""SoundStream spectral features, GAN losses, discriminators and the synthetic audio."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.soundstream import data, losses, spectral
from vp_jax.models.soundstream.config import preset
from vp_jax.models.soundstream.discriminators import (MultiScaleSTFTDiscriminator,
                                                      MultiScaleWaveDiscriminator, avg_pool2)


@pytest.fixture(autouse=True)
def _lazy_sharding():
  """Modules built outside a mesh: no eager sharding of the annotated parameters."""
  with nnx.use_eager_sharding(False):
    yield


def test_frames_and_stft_peak_at_the_tone_bin():
  x = jnp.arange(40.0)[None]
  f = spectral.frames(x, 16)                           # hop 4
  assert f.shape == (1, 10, 16)
  np.testing.assert_array_equal(np.asarray(f[0, 2]), np.arange(8.0, 24.0))
  np.testing.assert_array_equal(np.asarray(f[0, -1, 4:]), 0.0)   # end zero padding
  sr, n_fft = 16_000, 512
  tone = np.sin(2 * np.pi * 1000.0 * np.arange(8000) / sr)[None].astype(np.float32)
  mag = np.abs(np.asarray(spectral.stft(jnp.asarray(tone), n_fft)))
  assert np.argmax(mag[0, 5]) == round(1000.0 * n_fft / sr)   # bin 32


def test_mel_filters_cover_the_spectrum():
  fb = spectral.mel_filters(1024, 64, 16_000)
  assert fb.shape == (513, 64)
  assert fb.max() == pytest.approx(1.0, abs=0.05)
  assert np.all(fb.sum(0) > 0)                       # no empty band at 1024 points
  peaks = np.argmax(fb, 0)
  assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 480
  assert spectral.num_mels_for(64, 64) == 16 and spectral.num_mels_for(2048, 64) == 64


def test_mel_spectrogram_of_a_tone():
  """|STFT| through the mel filters, band count capped for short windows; a 1 kHz sine of
  amplitude 0.8 puts its energy in the bands around 1 kHz (the STFT's A / 2 scale)."""
  sr, n_fft = 16_000, 512
  tone = jnp.asarray(0.8 * np.sin(2 * np.pi * 1000.0 * np.arange(8000) / sr)[None], jnp.float32)
  mel = np.asarray(spectral.mel_spectrogram(tone, n_fft, 64, sr))
  assert mel.shape == (1, -(-8000 // (n_fft // 4)), 64)           # 63 frames, hop 128
  expected = np.abs(np.asarray(spectral.stft(tone, n_fft))) @ spectral.mel_filters(n_fft, 64, sr)
  np.testing.assert_allclose(mel, expected, rtol=1e-5, atol=1e-7)
  band = int(np.argmax(mel[0, 10]))
  assert band == int(np.argmax(spectral.mel_filters(n_fft, 64, sr)[32]))   # the 1 kHz bin's band
  # The peak bin (A / 2 = 0.4) plus the Hann window's two neighbours (A / 4 each), filter-weighted.
  assert 0.4 < mel[0, 10, band] < 0.8
  far = np.delete(mel[0, 10], range(band - 2, band + 3))
  assert far.max() < 0.01 * mel[0, 10, band]
  assert spectral.mel_spectrogram(tone, 64, 64, sr).shape[-1] == 16


def test_multiscale_mel_loss_and_metrics():
  rng = np.random.default_rng(0)
  x = jnp.asarray(0.3 * rng.normal(size=(2, 4096)), jnp.float32)
  # Identical waves: only the sqrt floor remains, mean_s sqrt(s / 2) * sqrt(1e-8) = 1.3e-3.
  assert float(spectral.multiscale_mel_loss(x, x, (64, 256, 1024), 64, 16_000)) < 1.5e-3
  noisy = x + 0.1 * jax.random.normal(jax.random.PRNGKey(0), x.shape)
  far = x + 0.3 * jax.random.normal(jax.random.PRNGKey(0), x.shape)
  l_near = float(spectral.multiscale_mel_loss(x, noisy, (64, 256, 1024), 64, 16_000))
  l_far = float(spectral.multiscale_mel_loss(x, far, (64, 256, 1024), 64, 16_000))
  assert 0 < l_near < l_far
  # SNR: noise at 1/10 of the amplitude -> 20 dB.
  ref = jnp.ones((1, 1000))
  assert float(spectral.snr_db(ref, ref * 1.1)[0]) == pytest.approx(20.0, abs=1e-3)
  assert float(spectral.log_mel_distance(x, x)[0]) == 0.0
  assert float(spectral.log_mel_distance(x, 0.5 * x)[0]) == pytest.approx(np.log10(2), rel=0.05)


def test_hinge_and_feature_matching_on_hand_values():
  real = [(jnp.array([2.0, 0.5]), [jnp.array([1.0, -1.0])])]
  fake = [(jnp.array([-2.0, 0.0]), [jnp.array([1.5, -1.0])])]
  # D: mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, 0])) = 0.25 + 0.5
  assert float(losses.hinge_discriminator(real, fake)) == pytest.approx(0.75)
  # G: mean(relu(1 - [-2, 0])) = 2
  assert float(losses.hinge_generator(fake)) == pytest.approx(2.0)
  # |[1,-1] - [1.5,-1]| mean = 0.25, / mean|real| = 1
  assert float(losses.feature_matching(real, fake)) == pytest.approx(0.25, rel=1e-5)
  assert float(losses.feature_matching(real, real)) == 0.0


def test_discriminator_shapes():
  cfg = preset("small")
  wave = jnp.zeros((2, 4096))
  stft = MultiScaleSTFTDiscriminator(cfg, rngs=nnx.Rngs(0))(wave)
  assert len(stft) == 3
  logits, feats = stft[0]                             # n_fft 512, hop 128: 32 frames, 257 bins
  assert logits.shape[:2] == (2, 16) and logits.shape[-1] == 1   # time strides 1, 2, 1
  assert len(feats) == 1 + cfg.stft_disc_layers
  wav = MultiScaleWaveDiscriminator(cfg, rngs=nnx.Rngs(0))(wave)
  assert len(wav) == 2
  assert wav[0][0].shape == (2, 4096 // 4 ** 3, 1)
  assert wav[1][0].shape == (2, 2048 // 4 ** 3, 1)
  np.testing.assert_allclose(np.asarray(avg_pool2(jnp.arange(6.0)[None])), [[0.5, 2.5, 4.5]])


def test_synthetic_audio_is_deterministic_and_in_range():
  a = data.synthetic_batch(0, 3, 4, 8000)
  b = data.synthetic_batch(0, 3, 4, 8000)
  c = data.synthetic_batch(1, 3, 4, 8000)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == (4, 8000) and a.dtype == np.float32
  peaks = np.abs(a).max(1)
  assert np.all(peaks >= 0.1 - 1e-6) and np.all(peaks <= 0.9 + 1e-6)
  rng = np.random.default_rng(0)
  for kind in data.KINDS:
    clip = data.synthetic_clip(rng, 4000, kind=kind)
    assert np.all(np.isfinite(clip)) and np.abs(clip).max() > 0
  with pytest.raises(ValueError, match="unknown kind"):
    data.synthetic_clip(rng, 100, kind="speech")
  it = data.synthetic_batches(4, 640, seed=0, process_index=1, process_count=2)
  np.testing.assert_array_equal(next(it)["wave"], data.synthetic_batch(0, 0, 4, 640)[2:])
  assert it.get_state() == {"index": 1}
