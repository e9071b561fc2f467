"""Direct unit tests of `vp_jax.io.video.VideoStreamInfo` and `probe`, the container-metadata read
that returns it: fps, duration, size and audio presence of small clips written here with the
project's own writers (mp4 / mov / webm, with and without audio, odd sizes, NTSC rate, gif), and
the errors for files without a video stream, garbage and missing files."""
import dataclasses

import numpy as np
import pytest
import soundfile

from vp_jax.io import video
from vp_jax.io.video import VideoStreamInfo


def _frames(t=12, h=16, w=24):
  """uint8 [T, H, W, 3]: a brightness ramp over time (every frame different)."""
  levels = np.linspace(20, 230, t).astype(np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (t, h, w, 3)).copy()


def test_video_stream_info_is_a_frozen_value():
  info = VideoStreamInfo(fps=8.0, duration_s=1.5, width=24, height=16, has_audio=False)
  assert [f.name for f in dataclasses.fields(VideoStreamInfo)] == [
      "fps", "duration_s", "width", "height", "has_audio"]
  assert info == VideoStreamInfo(8.0, 1.5, 24, 16, False)           # compared by value
  assert info != dataclasses.replace(info, has_audio=True)
  assert hash(info) == hash(VideoStreamInfo(8.0, 1.5, 24, 16, False))
  with pytest.raises(dataclasses.FrozenInstanceError):
    info.fps = 24.0


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".webm"])
@pytest.mark.parametrize("with_audio", [False, True])
def test_probe_reads_back_what_write_video_wrote(tmp_path, ext, with_audio):
  audio = np.sin(np.arange(24_000) * 2 * np.pi * 440 / 16_000) * 0.3 if with_audio else None
  path = video.write_video(str(tmp_path / f"clip{ext}"), _frames(), 8.0, audio=audio)
  info = video.probe(path)
  assert isinstance(info, VideoStreamInfo)
  # 12 frames at 8 fps: 1.5 s; H=16, W=24 as written. WebM (Matroska) stores no per-stream
  # duration, so probe falls back to the container's, which also spans the 1.5 s Opus track and
  # its last 20 ms frame's padding (1.508 s with libopus 1.x).
  tol = 0.02 if (ext, with_audio) == (".webm", True) else 1e-6
  assert info == VideoStreamInfo(fps=8.0, duration_s=pytest.approx(1.5, abs=tol), width=24,
                                 height=16, has_audio=with_audio)


def test_probe_odd_size_and_ntsc_rate(tmp_path):
  # 29.97 fps is written as 2997/100; 12 frames last 12 / 29.97 = 0.4004 s. A 15x9 frame is
  # padded to 16x10 (yuv420p), and probe reports the stored (padded) size.
  path = video.write_mp4(str(tmp_path / "odd.mp4"), _frames(12, 15, 9), 29.97)
  info = video.probe(path)
  assert info.fps == pytest.approx(29.97, abs=1e-9)
  assert info.duration_s == pytest.approx(12 / 29.97, abs=1e-6)
  assert (info.width, info.height, info.has_audio) == (10, 16, False)
  frames, _ = video.read_frames(path)
  assert frames.shape == (12, 16, 10, 3)                            # what a decoder gets


def test_probe_gif(tmp_path):
  path = video.write_gif(str(tmp_path / "clip.gif"), _frames(), 8.0)
  info = video.probe(path)
  assert (info.width, info.height, info.has_audio) == (24, 16, False)
  # Delays 13, 12, 13, 12, ... cs: 12 frames end at 150 cs.
  assert info.duration_s == pytest.approx(1.5, abs=1e-6)
  # A gif stores delays, not a rate: FFmpeg's average_rate reads 8.33 (100 / 12) here, its
  # guessed rate, which probe reports, the nominal 8.
  assert info.fps == 8.0


def test_probe_errors_name_the_file(tmp_path):
  wav = str(tmp_path / "tone.wav")
  soundfile.write(wav, np.zeros(1600, np.float32), 16_000)
  with pytest.raises(video.VideoError, match="tone.wav: no video stream"):
    video.probe(wav)
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"not a video" * 10)
  with pytest.raises(video.VideoError, match="junk.mp4: cannot open video"):
    video.probe(str(junk))
  with pytest.raises(video.VideoError, match="missing.mp4: cannot open video"):
    video.probe(str(tmp_path / "missing.mp4"))
