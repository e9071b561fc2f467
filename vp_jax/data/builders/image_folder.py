"""tfds builder for a folder of images with captions (text-to-image data).

    builder = ImageFolder(config=ImageFolderConfig(name="imgs", source_dir="/data/imgs"),
                          data_dir="/data/tfds")
    builder.download_and_prepare()

Images are decoded with Pillow (any format it reads; animated files use their first frame), converted
to RGB (alpha composited on black), scaled to cover the resolution (Lanczos) and centre-cropped.
The paper tokenizes images at 128x128. Bad files follow the same policy as the video builder.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from vp_jax.data import formats
from vp_jax.data.builders.clips import center_crop, cover_size
from vp_jax.data.builders.common import BadExampleError, SkipCounter, read_captions


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  source_dir: str = ""
  captions: str | None = None
  resolution: str | tuple = "128x128"
  on_error: str = "raise"
  max_skip_fraction: float = 0.1


def load_image(path: str, hw: tuple[int, int]) -> np.ndarray:
  """-> uint8 [H, W, 3]; BadExampleError for missing or undecodable files."""
  if not os.path.exists(path):
    raise BadExampleError(path, "missing_file", "listed in the captions file but not found")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
      im = im.convert("RGB")
      h, w = cover_size((im.height, im.width), hw)
      im = im.resize((w, h), Image.Resampling.LANCZOS)
      return np.ascontiguousarray(center_crop(np.asarray(im)[None], hw)[0])
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise BadExampleError(path, "corrupt", str(e)) from e


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """Captioned images of a local folder at a fixed resolution."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [ImageFolderConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = formats.resolution(self.builder_config.resolution)
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(h, w, 3)),
            "caption": tfds.features.Text(),
            "source": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    if not cfg.source_dir:
      raise ValueError("ImageFolder: set ImageFolderConfig.source_dir to the folder of images.")
    rows = read_captions(cfg.source_dir, cfg.captions)
    splits = sorted({r.split for r in rows})
    return {s: self._generate_examples([r for r in rows if r.split == s], s) for s in splits}

  def _generate_examples(self, rows, split):
    cfg = self.builder_config
    hw = formats.resolution(cfg.resolution)
    counter = SkipCounter(cfg.on_error, cfg.max_skip_fraction)
    for row in rows:
      counter.seen += 1
      rel = os.path.relpath(row.file, cfg.source_dir)
      try:
        if not row.caption:
          raise BadExampleError(row.file, "empty_caption", f"captions row {row.line}")
        image = load_image(row.file, hw)
      except BadExampleError as e:
        counter.handle(e)
        continue
      yield rel, {"id": rel, "image": image, "caption": row.caption, "source": rel}
    counter.write(self.data_dir, f"skipped-{split}.json")
    counter.check(f"ImageFolder({cfg.source_dir}, split={split})")
