"""Folder builders on real media files made here with PyAV/soundfile/Pillow: frame counts, 8 fps
resampling, crops, audio length, and the documented handling of each kind of bad file."""
import json
import os

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds
from PIL import Image

from vp_jax.data.builders import clips as clips_lib
from vp_jax.data.builders.common import BadExampleError, TooManySkippedError, read_captions
from vp_jax.data.builders.image_folder import ImageFolder, ImageFolderConfig
from vp_jax.data.builders.video_folder import VideoFolder, VideoFolderConfig
from vp_jax.io import video as video_io

SR = 16_000


def _gray_frames(n, h=48, w=64, step=2):
  """Frame i is uniformly gray at level step * i: the level identifies the source frame."""
  return np.stack([np.full((h, w, 3), step * i, np.uint8) for i in range(n)])


def _tone(seconds, freq=440.0, sr=SR):
  t = np.arange(int(round(seconds * sr))) / sr
  return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  d = tmp_path_factory.mktemp("media")
  # 30 fps, 3 s, with an AAC track: resampled to 8 fps, 2 back-to-back 17-frame clips fit.
  video_io.write_mp4(str(d / "gray30.mp4"), _gray_frames(90), fps=30, audio=_tone(3.0), crf=0)
  # 5 fps gif of 4 s (frames repeat when resampled up to 8 fps).
  video_io.write_gif(str(d / "slow5.gif"), _gray_frames(20, step=10), fps=5)
  # No audio track, audio in a separate 44.1 kHz stereo wav.
  video_io.write_mp4(str(d / "silent.mp4"), _gray_frames(24, step=5), fps=8, crf=0)
  t = np.arange(44_100 * 3) / 44_100
  soundfile.write(str(d / "silent_audio.wav"), np.stack([np.sin(2 * np.pi * 330 * t)] * 2, 1) * 0.3,
                  44_100)
  # Landscape 96x160: left half red, right half blue, for the crop check.
  half = np.zeros((17, 96, 160, 3), np.uint8)
  half[:, :, :80] = (255, 0, 0)
  half[:, :, 80:] = (0, 0, 255)
  video_io.write_mp4(str(d / "halves.mp4"), half, fps=8, crf=0)
  # Bad files.
  (d / "corrupt.mp4").write_bytes(os.urandom(3000))
  video_io.write_mp4(str(d / "short.mp4"), _gray_frames(8), fps=8)   # 1 s < 2.125 s
  rows = [
      {"file": "gray30.mp4", "caption": "gray ramp at thirty fps"},
      {"file": "slow5.gif", "caption": "slow gif"},
      {"file": "silent.mp4", "caption": "silent with a wav", "audio": "silent_audio.wav"},
      {"file": "halves.mp4", "caption": "red and blue halves", "split": "validation"},
      {"file": "corrupt.mp4", "caption": "garbage"},
      {"file": "short.mp4", "caption": "too short"},
      {"file": "nowhere.mp4", "caption": "missing"},
      {"file": "gray30.mp4", "caption": "   "},
  ]
  with open(d / "captions.jsonl", "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return d


def test_write_and_read_mp4_round_trip(media):
  info = video_io.probe(str(media / "gray30.mp4"))
  assert info.fps == pytest.approx(30.0) and info.has_audio
  assert (info.height, info.width) == (48, 64)
  frames, times, wave = video_io.read_video(str(media / "gray30.mp4"))
  assert frames.shape == (90, 48, 64, 3)
  np.testing.assert_allclose(times[:4], np.arange(4) / 30, atol=1e-3)
  levels = frames.reshape(90, -1).mean(1)
  np.testing.assert_allclose(levels, 2 * np.arange(90), atol=2.5)
  # Decoding stops at the first frame past max_seconds: t = 31 / 30 s.
  part, part_times = video_io.read_frames(str(media / "gray30.mp4"), max_seconds=1.0)
  assert part.shape[0] == 32 and part_times[-1] == pytest.approx(31 / 30, abs=1e-3)
  assert abs(wave.size - 3 * SR) < 0.05 * SR  # AAC frames round the length
  spectrum = np.abs(np.fft.rfft(wave[SR // 2:SR // 2 + SR]))
  assert abs(np.argmax(spectrum) - 440) <= 2


def test_write_gif_and_read_it_back(media):
  frames, times = video_io.read_frames(str(media / "slow5.gif"))
  assert frames.shape[0] == 20
  np.testing.assert_allclose(times[:3], [0.0, 0.2, 0.4], atol=1e-3)
  np.testing.assert_allclose(frames.reshape(20, -1).mean(1), 10 * np.arange(20), atol=3)


def test_gif_frame_times_keep_the_rate(tmp_path):
  """8 fps is 12.5 centiseconds a frame: the delays alternate 120 / 130 ms, so frame i starts
  within 5 ms of i / 8 s (a constant 120 ms played 4 % fast: frame 16 at 1.92 s, not 2.0)."""
  assert video_io.gif_durations_ms(4, 8.0) == [130, 120, 130, 120]
  assert video_io.gif_durations_ms(3, 5.0) == [200, 200, 200]
  assert video_io.gif_durations_ms(2, 1000.0) == [10, 10]       # GIF's shortest delay
  with pytest.raises(video_io.VideoError, match="fps=0"):
    video_io.gif_durations_ms(2, 0)
  video_io.write_gif(str(tmp_path / "c.gif"), _gray_frames(17, step=10), fps=8)
  frames, times = video_io.read_frames(str(tmp_path / "c.gif"))
  assert frames.shape[0] == 17
  assert np.max(np.abs(times - np.arange(17) / 8.0)) <= 0.0051, times


def test_resample_indices_and_available_clips():
  times = np.arange(90) / 30.0
  idx = clips_lib.resample_indices(times, 0.0, 17)
  np.testing.assert_array_equal(idx, np.floor(np.arange(17) * 30 / 8 + 1e-9).astype(int))
  assert clips_lib.available_clips(times, 17) == 1  # second clip needs t = 2.125 + 2 s
  assert clips_lib.available_clips(np.arange(180) / 30.0, 17) == 2  # last frame 5.97 s < 6.25
  assert clips_lib.available_clips(np.arange(200) / 30.0, 17) == 3
  assert clips_lib.available_clips(np.arange(8) / 8.0, 17) == 0
  assert clips_lib.cover_size((96, 160), (48, 32)) == (48, 80)
  assert clips_lib.cover_size((100, 100), (224, 128)) == (224, 224)


def test_video_clips_fps_crop_and_audio(media):
  [(start, frames, wave)] = list(clips_lib.video_clips(
      str(media / "gray30.mp4"), hw=(32, 32), num_frames=17, max_clips=3, audio="require"))
  assert start == 0.0 and frames.shape == (17, 32, 32, 3)
  expected = 2 * np.floor(np.arange(17) * 30 / 8 + 1e-9)
  np.testing.assert_allclose(frames.reshape(17, -1).mean(1), expected, atol=2.5)
  assert wave.shape == (34_000,)
  # gif at 5 fps -> 8 fps: frame j shows source floor(j * 5 / 8); 4 s -> one 17-frame clip.
  [(_, g, _)] = list(clips_lib.video_clips(str(media / "slow5.gif"), hw=(32, 32), num_frames=17,
                                           audio="optional"))
  np.testing.assert_allclose(g.reshape(17, -1).mean(1), 10 * np.floor(np.arange(17) * 5 / 8),
                             atol=3)
  # Landscape -> portrait crop keeps the centre: left half red, right half blue.
  [(_, h, _)] = list(clips_lib.video_clips(str(media / "halves.mp4"), hw=(48, 32), num_frames=17,
                                           audio="ignore"))
  assert h.shape == (17, 48, 32, 3)
  assert h[0, :, :14, 0].min() > 200 and h[0, :, :14, 2].max() < 60
  assert h[0, :, 18:, 2].min() > 200 and h[0, :, 18:, 0].max() < 60
  # Separate 44.1 kHz stereo wav -> 16 kHz mono, the clip's 34,000 samples.
  [(_, _, w)] = list(clips_lib.video_clips(
      str(media / "silent.mp4"), hw=(32, 32), num_frames=17, audio="require",
      audio_path=str(media / "silent_audio.wav")))
  assert w.shape == (34_000,)
  assert abs(np.argmax(np.abs(np.fft.rfft(w[:SR]))) - 330) <= 2


@pytest.mark.parametrize("name,kwargs,reason", [
    ("corrupt.mp4", {}, "corrupt"),
    ("short.mp4", {}, "too_short"),
    ("nowhere.mp4", {}, "missing_file"),
    ("silent.mp4", {"audio": "require"}, "missing_audio"),
])
def test_each_bad_video_raises_naming_the_file(media, name, kwargs, reason):
  path = str(media / name)
  with pytest.raises(BadExampleError) as err:
    list(clips_lib.video_clips(path, hw=(32, 32), num_frames=17, **kwargs))
  assert err.value.reason == reason and path in str(err.value)


def test_video_folder_builder_skips_and_reports(media, tmp_path):
  cfg = VideoFolderConfig(name="t32", source_dir=str(media), resolution="32x32", num_frames=17,
                          clips_per_video=2, on_error="skip", max_skip_fraction=0.7)
  builder = VideoFolder(config=cfg, data_dir=str(tmp_path))
  builder.download_and_prepare()
  train = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
  by_id = {ex["id"].decode(): ex for ex in train}
  # gray30: 3 s -> 1 clip (the 2nd needs 4.25 s); gif: 1 clip; silent: 1 clip with wav audio.
  assert sorted(by_id) == ["gray30.mp4#0", "silent.mp4#0", "slow5.gif#0"]
  for ex in train:
    assert ex["video"].shape == (17, 32, 32, 3)
  assert by_id["gray30.mp4#0"]["has_audio"] and by_id["gray30.mp4#0"]["audio"].shape == (34_000,)
  assert by_id["silent.mp4#0"]["has_audio"]
  assert not by_id["slow5.gif#0"]["has_audio"] and by_id["slow5.gif#0"]["audio"].shape == (0,)
  val = list(tfds.as_numpy(builder.as_dataset(split="validation")))
  assert len(val) == 1 and val[0]["caption"] == b"red and blue halves"
  report = json.loads(open(os.path.join(builder.data_dir, "skipped-train.json")).read())
  assert report["seen"] == 7 and report["skipped"] == 4
  assert report["by_reason"] == {"corrupt": 1, "too_short": 1, "missing_file": 1,
                                 "empty_caption": 1}


def test_video_folder_fails_over_skip_fraction_and_raises_by_default(media, tmp_path):
  cfg = VideoFolderConfig(name="strict", source_dir=str(media), resolution="32x32",
                          on_error="skip", max_skip_fraction=0.25)
  with pytest.raises(TooManySkippedError, match="skipped 4 of 7"):
    VideoFolder(config=cfg, data_dir=str(tmp_path / "a")).download_and_prepare()
  cfg = VideoFolderConfig(name="raise", source_dir=str(media), resolution="32x32")
  with pytest.raises(BadExampleError, match="corrupt.mp4: corrupt"):
    VideoFolder(config=cfg, data_dir=str(tmp_path / "b")).download_and_prepare()


def test_captions_csv_and_errors(tmp_path):
  (tmp_path / "captions.csv").write_text("file,caption,audio\na.mp4,hello,\nb.mp4,world,b.wav\n")
  rows = read_captions(str(tmp_path))
  assert [r.caption for r in rows] == ["hello", "world"]
  assert rows[0].audio is None and rows[1].audio == str(tmp_path / "b.wav")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "captions.jsonl").write_text('{"file": "a.mp4"}\nnot json\n')
  with pytest.raises(ValueError, match="captions.jsonl:2"):
    read_captions(str(tmp_path / "bad"))
  with pytest.raises(FileNotFoundError, match="no captions"):
    read_captions(str(tmp_path / "bad" / "nothing"))


def test_image_folder_builder(tmp_path):
  src = tmp_path / "imgs"
  src.mkdir()
  Image.fromarray(np.full((60, 90, 3), (0, 200, 0), np.uint8)).save(src / "green.png")
  rgba = np.zeros((40, 40, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[..., 3] = 255
  Image.fromarray(rgba).save(src / "red.png")
  Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(src / "gray.jpg", quality=95)
  (src / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
  rows = [{"file": "green.png", "caption": "green"}, {"file": "red.png", "caption": "red"},
          {"file": "gray.jpg", "caption": "gray"}, {"file": "broken.jpg", "caption": "broken"},
          {"file": "gray.jpg", "caption": ""}]
  (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  cfg = ImageFolderConfig(name="i32", source_dir=str(src), resolution="32x32", on_error="skip",
                          max_skip_fraction=0.5)
  builder = ImageFolder(config=cfg, data_dir=str(tmp_path / "out"))
  builder.download_and_prepare()
  ds = {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  assert sorted(ds) == ["gray.jpg", "green.png", "red.png"]
  assert ds["green.png"]["image"].shape == (32, 32, 3)
  np.testing.assert_array_equal(ds["green.png"]["image"][5, 5], [0, 200, 0])
  np.testing.assert_array_equal(ds["red.png"]["image"][0, 0], [255, 0, 0])
  report = json.loads(open(os.path.join(builder.data_dir, "skipped-train.json")).read())
  assert report["by_reason"] == {"corrupt": 1, "empty_caption": 1}
  strict = ImageFolderConfig(name="i32s", source_dir=str(src), resolution="32x32")
  with pytest.raises(BadExampleError, match="broken.jpg: corrupt"):
    ImageFolder(config=strict, data_dir=str(tmp_path / "out2")).download_and_prepare()


def test_video_writer_edge_cases_and_errors(tmp_path):
  # Odd sizes are padded to even (yuv420p); float frames in [0, 1] are accepted.
  frames = np.full((3, 15, 21, 3), 0.5, np.float32)
  path = video_io.write_mp4(str(tmp_path / "odd.mp4"), frames, fps=8)
  back, _ = video_io.read_frames(path)
  assert back.shape == (3, 16, 22, 3) and abs(float(back.mean()) - 128) < 3
  with pytest.raises(video_io.VideoError, match="bad.mp4: frames must be"):
    video_io.write_mp4(str(tmp_path / "bad.mp4"), np.zeros((4, 4, 3), np.uint8))
  (tmp_path / "junk.mp4").write_bytes(b"0" * 100)
  with pytest.raises(video_io.VideoError, match="junk.mp4"):
    video_io.read_frames(str(tmp_path / "junk.mp4"))
  assert not os.path.exists(tmp_path / "bad.mp4")


def test_read_audio_falls_back_to_pyav_for_containers(media):
  from vp_jax.io import audio as audio_io
  wave = audio_io.read_audio(str(media / "gray30.mp4"))
  assert abs(wave.size - 3 * SR) < 0.05 * SR
  assert audio_io.read_container_audio(str(media / "silent.mp4"), missing_ok=True) is None
  with pytest.raises(audio_io.AudioError, match="silent.mp4: no audio stream"):
    audio_io.read_container_audio(str(media / "silent.mp4"))
  with pytest.raises(audio_io.AudioError, match="corrupt.mp4"):
    audio_io.read_audio(str(media / "corrupt.mp4"))


@pytest.mark.parametrize("ext", [".webm", ".mov"])
def test_webm_and_mov_with_audio_decode_to_clips(tmp_path, ext):
  path = video_io.write_video(str(tmp_path / f"clip{ext}"), _gray_frames(60, step=4), fps=24,
                              audio=_tone(2.5, 523.0), crf=4)
  [(_, frames, wave)] = list(clips_lib.video_clips(path, hw=(32, 32), num_frames=17,
                                                   audio="require"))
  # 24 fps -> 8 fps: every third source frame.
  np.testing.assert_allclose(frames.reshape(17, -1).mean(1), 4 * 3 * np.arange(17), atol=3)
  assert wave.shape == (34_000,)
  assert abs(np.argmax(np.abs(np.fft.rfft(wave[4000:20000]))) * SR / 16000 - 523) <= 2
  with pytest.raises(video_io.VideoError, match="cannot write '.avi'"):
    video_io.write_video(str(tmp_path / "x.avi"), _gray_frames(2))


def test_center_crop():
  frames = np.arange(2 * 5 * 6 * 1).reshape(2, 5, 6, 1)
  got = clips_lib.center_crop(frames, (3, 2))
  np.testing.assert_array_equal(got, frames[:, 1:4, 2:4])
  np.testing.assert_array_equal(clips_lib.center_crop(frames, (5, 6)), frames)
  with pytest.raises(ValueError, match="frames 5x6 smaller than 6x6"):
    clips_lib.center_crop(frames, (6, 6))
