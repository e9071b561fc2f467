"""tfds builder for the synthetic dataset, for pipelines that want it as a prepared tfds dataset.

The tokenization job reads `SyntheticVideos` directly (it is random access and needs no storage);
this builder materializes the same examples (byte-identical frames) in the tfds format:

    builder = SyntheticShapes(config=SyntheticShapesConfig(name="32x32_17f", resolution="32x32",
                                                           num_frames=17, num_examples=256),
                              data_dir="/tmp/tfds")
    builder.download_and_prepare()

Depth and flow are stored as float16 (flow in pixels: exact to ~1/500 px at these sizes).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

from vp_jax.data import formats
from vp_jax.data.synthetic.dataset import SyntheticConfig, SyntheticVideos, flat_labels

_STR_LABELS = ("shape", "colour", "size", "direction", "speed", "rotation", "background",
               "pattern", "camera")
_INT_LABELS = ("bounces", "num_objects")


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  resolution: str | tuple = "32x32"
  num_frames: int = 17
  num_examples: int = 256
  seed: int = 0

  def synthetic(self) -> SyntheticConfig:
    return SyntheticConfig(resolution=self.resolution, num_frames=self.num_frames,
                           num_examples=self.num_examples, seed=self.seed)


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
  """Rendered shapes with captions, soundtrack, depth, optical flow and labels."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      SyntheticShapesConfig(name=f"{res}_{t}f", resolution=res, num_frames=t)
      for res in ("32x32", "64x64", "128x128", "128x224") for t in (1, 17, 41)]

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    h, w = formats.resolution(cfg.resolution)
    t = cfg.num_frames
    zlib = tfds.features.Encoding.ZLIB
    features = {
        "id": tfds.features.Text(),
        "video": tfds.features.Tensor(shape=(t, h, w, 3), dtype=np.uint8, encoding=zlib),
        "depth": tfds.features.Tensor(shape=(t, h, w), dtype=np.float16, encoding=zlib),
        "flow": tfds.features.Tensor(shape=(t, h, w, 2), dtype=np.float16, encoding=zlib),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "has_audio": tfds.features.Tensor(shape=(), dtype=np.bool_),
        "caption": tfds.features.Text(),
        "labels_json": tfds.features.Text(),
    }
    features.update({f"label_{k}": tfds.features.Text() for k in _STR_LABELS})
    features.update({f"label_{k}": tfds.features.Tensor(shape=(), dtype=np.int32)
                     for k in _INT_LABELS})
    return self.dataset_info_from_configs(description=__doc__,
                                          features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config.synthetic()
    return {split: self._generate_examples(SyntheticVideos(config, split))
            for split in ("train", "validation")}

  def _generate_examples(self, videos: SyntheticVideos):
    for i in range(len(videos)):
      ex = videos[i]
      yield ex["id"], to_tfds_example(ex)


def to_tfds_example(ex: dict) -> dict:
  flat = flat_labels(ex["labels"])
  out = {"id": ex["id"], "video": ex["frames"], "depth": ex["depth"].astype(np.float16),
         "flow": ex["flow"].astype(np.float16), "audio": ex["audio"],
         "has_audio": bool(ex["has_audio"]), "caption": ex["caption"],
         "labels_json": json.dumps(ex["labels"], sort_keys=True)}
  out.update({f"label_{k}": str(flat[k]) for k in _STR_LABELS})
  out.update({f"label_{k}": np.int32(flat[k]) for k in _INT_LABELS})
  return out
