"""Audio file I/O: wav round trip, down-mix, resampling lengths and content, bad files."""
import numpy as np
import pytest
import soundfile

from vp_jax.io import audio


def _tone(freq, sr, seconds):
  t = np.arange(int(sr * seconds)) / sr
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_round_trip_within_16bit_quantization(tmp_path):
  wave = _tone(440.0, 16_000, 0.5)
  path = audio.write_wav(str(tmp_path / "a.wav"), wave)
  back = audio.read_audio(path)
  assert back.shape == wave.shape
  np.testing.assert_allclose(back, wave, atol=1.0 / 32768 + 1e-6)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
  sr = 44_100
  left, right = _tone(440.0, sr, 1.0), _tone(440.0, sr, 1.0) * 0.0
  path = str(tmp_path / "s.wav")
  soundfile.write(path, np.stack([left, right], 1), sr, subtype="FLOAT")
  wave = audio.read_audio(path)
  assert wave.shape == (16_000,)
  # Average of the channels: amplitude 0.25, still a 440 Hz tone.
  assert abs(np.abs(wave[1000:-1000]).max() - 0.25) < 0.01
  spectrum = np.abs(np.fft.rfft(wave))
  assert abs(np.argmax(spectrum) * 16_000 / wave.size - 440.0) < 2.0


def test_resample_lengths():
  assert audio.resample(np.zeros(44_100), 44_100, 16_000).shape == (16_000,)
  assert audio.resample(np.zeros(8_000), 8_000, 16_000).shape == (16_000,)
  x = np.random.default_rng(0).normal(size=100).astype(np.float32)
  np.testing.assert_array_equal(audio.resample(x, 16_000, 16_000), x)


def test_bad_inputs_name_the_file(tmp_path):
  bad = tmp_path / "broken.wav"
  bad.write_bytes(b"RIFF not really a wav")
  with pytest.raises(audio.AudioError, match="broken.wav"):
    audio.read_audio(str(bad))
  with pytest.raises(audio.AudioError, match="empty"):
    audio.check_wave(np.zeros(0))
  with pytest.raises(audio.AudioError, match="NaN"):
    audio.check_wave(np.array([0.0, np.nan]))
  with pytest.raises(audio.AudioError, match="silent"):
    audio.check_wave(np.zeros(10), allow_silent=False)
  with pytest.raises(audio.AudioError, match="shape"):
    audio.to_mono(np.zeros((2, 2, 2)))


def test_write_refuses_nan_and_keeps_existing_file(tmp_path):
  path = str(tmp_path / "keep.wav")
  audio.write_wav(path, _tone(220.0, 16_000, 0.1))
  before = open(path, "rb").read()
  with pytest.raises(audio.AudioError):
    audio.write_wav(path, np.array([np.nan, 0.0], np.float32))
  assert open(path, "rb").read() == before
