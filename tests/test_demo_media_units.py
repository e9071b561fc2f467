"""Direct unit tests of vp_jax.demo.media: `to_uint8` and `write_clip` (read back with the repo's
own PyAV reader `vp_jax.io.video.read_frames`, plus Pillow / soundfile for gif / wav metadata)."""
import os

import numpy as np
import pytest
import soundfile
from PIL import Image

from vp_jax.demo import media
from vp_jax.io import video


def test_to_uint8_exact_values_and_clipping():
  x = np.array([[0.0, 0.5, 1.0, 0.25, 1 / 255],
                [0.998, -0.3, 1.7, -np.inf, np.inf]], np.float32)
  out = media.to_uint8(x)
  assert out.dtype == np.uint8 and out.shape == (2, 5)
  # 0.5 * 255 = 127.5 rounds (half to even) to 128; 0.25 * 255 = 63.75 -> 64;
  # 0.998 * 255 = 254.49 -> 254.
  np.testing.assert_array_equal(out, [[0, 128, 255, 64, 1], [254, 0, 255, 0, 255]])
  np.testing.assert_array_equal(media.to_uint8(x.astype(np.float64)), out)
  np.testing.assert_array_equal(media.to_uint8([0.0, 0.5, 1.0]), [0, 128, 255])  # lists too
  frames = np.full((2, 3, 4, 3), 0.2, np.float16)
  got = media.to_uint8(frames)
  assert got.shape == (2, 3, 4, 3) and np.all(got == 51)  # 0.2 * 255 = 51


def test_to_uint8_passes_uint8_through_unchanged():
  frames = np.array([[0, 7, 128, 255]], np.uint8)
  out = media.to_uint8(frames)
  assert out is frames  # no copy, no rescaling
  np.testing.assert_array_equal(out, [[0, 7, 128, 255]])
  for bad in (np.int32, np.int64, bool):   # 0..255 ints scaled by 255 would all turn white
    with pytest.raises(ValueError, match=f"frames: dtype {np.dtype(bad)}; pass uint8"):
      media.to_uint8(frames.astype(bad))


def _solid_clip() -> np.ndarray:
  """float [4, 8, 8, 3]: red, green, blue, white frames."""
  f = np.zeros((4, 8, 8, 3), np.float32)
  f[0, ..., 0] = f[1, ..., 1] = f[2, ..., 2] = 1.0
  f[3] = 1.0
  return f


COLOURS = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]


def test_write_clip_mp4_and_gif_read_back(tmp_path):
  base = str(tmp_path / "sub" / "clip")  # the folder is created
  files = media.write_clip(base, _solid_clip(), 10.0, scale=2)
  assert files == [base + ".mp4", base + ".gif"]
  assert sorted(os.listdir(tmp_path / "sub")) == ["clip.gif", "clip.mp4"]  # no wav, no temp files

  frames, times = video.read_frames(base + ".mp4")
  assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8  # upscaled 2x
  np.testing.assert_allclose(times, [0.0, 0.1, 0.2, 0.3], atol=1e-6)
  for i, colour in enumerate(COLOURS):  # H.264 yuv420p is lossy: within a few levels
    assert np.abs(frames[i].astype(int) - colour).max() <= 4, i
  info = video.probe(base + ".mp4")
  assert (info.width, info.height, info.fps, info.has_audio) == (16, 16, 10.0, False)

  gif, gif_times = video.read_frames(base + ".gif")
  assert gif.shape == (4, 16, 16, 3)
  for i, colour in enumerate(COLOURS):  # one colour per frame: the palette is exact
    assert np.all(gif[i] == colour), i
  with Image.open(base + ".gif") as im:
    assert im.n_frames == 4
    assert im.info["duration"] == 100 and im.info["loop"] == 0  # 1000 / fps ms, looping


def test_write_clip_upscales_by_pixel_repetition(tmp_path):
  checker = np.zeros((2, 4, 6, 3), np.uint8)  # uint8 input: written as is
  checker[:, ::2, ::2] = [200, 30, 60]
  checker[:, 1::2, 1::2] = [200, 30, 60]
  checker[1] = checker[1, ::-1]
  base = str(tmp_path / "checker")
  media.write_clip(base, checker, 4.0, scale=3)
  gif, _ = video.read_frames(base + ".gif")
  assert gif.shape == (2, 12, 18, 3)
  want = np.repeat(np.repeat(checker, 3, axis=1), 3, axis=2)
  np.testing.assert_array_equal(gif, want)
  assert np.all(gif[0, 0:3, 0:3] == [200, 30, 60]) and np.all(gif[0, 0:3, 3:6] == 0)


def test_write_clip_with_audio_writes_wav_and_audio_track(tmp_path):
  audio = np.linspace(-1.5, 1.5, 1600).astype(np.float32)  # 0.1 s at 16 kHz, partly out of range
  base = str(tmp_path / "talk")
  files = media.write_clip(base, _solid_clip(), 8.0, audio=audio)
  assert files == [base + ".mp4", base + ".gif", base + ".wav"]
  wave, sr = soundfile.read(base + ".wav", dtype="float32")
  assert sr == 16000 and wave.shape == (1600,)
  inside = np.abs(audio) <= 1.0
  assert wave.min() == -1.0 and wave.max() >= 1.0 - 1 / 32767  # clipped to [-1, 1]
  np.testing.assert_allclose(wave[inside], audio[inside], atol=1 / 32767 + 1e-6)  # 16-bit PCM
  assert np.all(np.abs(wave[~inside]) >= 1.0 - 1 / 32767)
  info = video.probe(base + ".mp4")
  assert info.has_audio and (info.width, info.height) == (8, 8)
  frames, _ = video.read_frames(base + ".mp4")
  assert frames.shape == (4, 8, 8, 3)


def test_write_clip_odd_size_pads_mp4_but_not_gif(tmp_path):
  frames = np.stack([np.full((5, 7, 3), v, np.float32) for v in (0.2, 0.5, 0.8)])  # all distinct
  base = str(tmp_path / "odd")
  media.write_clip(base, frames, 8.0)
  mp4, _ = video.read_frames(base + ".mp4")
  gif, _ = video.read_frames(base + ".gif")
  assert mp4.shape == (3, 6, 8, 3)  # yuv420p needs even sizes: one edge row/column added
  assert gif.shape == (3, 5, 7, 3)
  np.testing.assert_array_equal(gif[:, 0, 0, 0], [51, 128, 204])  # round(v * 255)
  assert np.abs(mp4.astype(int) - np.array([51, 128, 204])[:, None, None, None]).max() <= 3


def test_write_clip_repeated_frames_keep_the_gif_timing(tmp_path):
  # black, white, white, black: Pillow merges consecutive identical gif frames (adding their
  # durations), so the gif holds 3 frames; the mp4 keeps all 4 and the gif's total time is 4/fps.
  frames = np.zeros((4, 8, 8, 3), np.float32)
  frames[1:3] = 1.0
  base = str(tmp_path / "rep")
  media.write_clip(base, frames, 10.0)
  mp4, _ = video.read_frames(base + ".mp4")
  assert mp4.shape == (4, 8, 8, 3)
  gif, _ = video.read_frames(base + ".gif")
  assert [int(f[0, 0, 0]) for f in gif] == [0, 255, 0]
  with Image.open(base + ".gif") as im:
    durations = []
    for i in range(im.n_frames):
      im.seek(i)
      durations.append(im.info["duration"])
  assert sum(durations) == 400


def test_write_clip_rejects_frames_without_channels(tmp_path):
  base = str(tmp_path / "bad")
  with pytest.raises(video.VideoError,
                     match=r"bad\.mp4: frames must be \[T, H, W, 3\] with T > 0, "
                     r"got \(2, 8, 8\)\."):
    media.write_clip(base, np.zeros((2, 8, 8), np.float32), 8.0)
  assert os.listdir(tmp_path) == []  # nothing (not even a temp file) left behind
