"""tfds builder for a folder of videos (mp4/webm/mov/gif) with captions and optional audio.

    config = VideoFolderConfig(name="clips_128x128_17f", source_dir="/data/my_videos",
                               resolution="128x128", num_frames=17, on_error="skip")
    builder = VideoFolder(config=config, data_dir="/data/tfds")   # one data_dir per source folder
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")

Each listed file gives up to `clips_per_video` back-to-back clips (`vp_jax.data.builders.clips`).
Audio comes from the file's own audio track or from the `audio` column of the captions file.
Bad files follow `on_error` / `max_skip_fraction` (`vp_jax.data.builders.common`); the counts land in
`skipped-<split>.json` next to the dataset.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from vp_jax.data import formats
from vp_jax.data.builders import clips as clips_lib
from vp_jax.data.builders.common import BadExampleError, SkipCounter, read_captions

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".gif", ".mkv", ".avi")
AUDIO_MODES = ("optional", "require", "ignore")


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  source_dir: str = ""
  captions: str | None = None        # default: captions.jsonl or captions.csv in source_dir
  resolution: str | tuple = "128x128"
  num_frames: int = 17
  clips_per_video: int = 1
  audio: str = "optional"            # optional | require | ignore
  on_error: str = "raise"            # raise | skip
  max_skip_fraction: float = 0.1


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Clips of a local video folder at 8 fps, fixed length and resolution, 16 kHz mono audio."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [VideoFolderConfig(name="default")]

  def _cfg(self) -> VideoFolderConfig:
    cfg = self.builder_config
    if not cfg.source_dir:
      raise ValueError("VideoFolder: set VideoFolderConfig.source_dir to the folder of videos.")
    if cfg.audio not in AUDIO_MODES:
      raise ValueError(f"VideoFolderConfig.audio={cfg.audio!r}: expected one of {AUDIO_MODES}.")
    formats.check_num_frames(cfg.num_frames)
    return cfg

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    h, w = formats.resolution(cfg.resolution)
    t = cfg.num_frames
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "video": tfds.features.Tensor(shape=(t, h, w, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB),
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "has_audio": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "caption": tfds.features.Text(),
            "source": tfds.features.Text(),
            "start_s": tfds.features.Tensor(shape=(), dtype=np.float32),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self._cfg()
    rows = read_captions(cfg.source_dir, cfg.captions)
    splits = sorted({r.split for r in rows})
    return {s: self._generate_examples([r for r in rows if r.split == s], s) for s in splits}

  def _generate_examples(self, rows, split):
    cfg = self._cfg()
    hw = formats.resolution(cfg.resolution)
    counter = SkipCounter(cfg.on_error, cfg.max_skip_fraction)
    for row in rows:
      counter.seen += 1
      rel = os.path.relpath(row.file, cfg.source_dir)
      try:
        if not row.caption:
          raise BadExampleError(row.file, "empty_caption", f"captions row {row.line}")
        if not row.file.lower().endswith(VIDEO_EXTENSIONS) and os.path.exists(row.file):
          raise BadExampleError(row.file, "corrupt",
                                f"not a video file extension {VIDEO_EXTENSIONS}")
        produced = list(clips_lib.video_clips(
            row.file, hw=hw, num_frames=cfg.num_frames, max_clips=cfg.clips_per_video,
            audio=cfg.audio, audio_path=row.audio))
      except BadExampleError as e:
        counter.handle(e)
        continue
      for k, (start, frames, wave) in enumerate(produced):
        yield f"{rel}#{k}", {
            "id": f"{rel}#{k}", "video": frames,
            "audio": wave if wave is not None else np.zeros((0,), np.float32),
            "has_audio": wave is not None, "caption": row.caption, "source": rel,
            "start_s": np.float32(start)}
    counter.write(self.data_dir, f"skipped-{split}.json")
    counter.check(f"VideoFolder({cfg.source_dir}, split={split})")
