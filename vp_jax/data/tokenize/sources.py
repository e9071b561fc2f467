"""Datasets the tokenization job reads, as random-access ranges of normalized examples.

A source has a length and yields examples for an index range, so shards can be made anywhere
(one process, or Beam workers) without coordination. Every example is a dict:

    id str, frames uint8 [T, H, W, 3] (T = 1 for images), audio float32 [N] (16 kHz; [0] if none),
    has_audio bool, caption str, labels dict ({} for real data),
    optional depth float32 [T, H, W] and flow float32 [T, H, W, 2] (stylization structure).

Sources are picklable (Beam ships them to workers): they hold configs and paths, not open files.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

import numpy as np

from vp_jax.data.synthetic.dataset import SyntheticConfig, SyntheticVideos


class SyntheticSource:
  """The built-in synthetic dataset (rendered on the fly; has exact depth and flow)."""

  has_structure = True

  def __init__(self, config: SyntheticConfig = SyntheticConfig(), split: str = "train"):
    self.config, self.split = config, split
    self._videos = SyntheticVideos(config, split)

  def __len__(self) -> int:
    return len(self._videos)

  def read(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
    for i in range(start, stop):
      yield self._videos[i]

  def describe(self) -> dict[str, Any]:
    c = dataclasses.asdict(self.config)
    c["resolution"] = list(self.config.hw)
    return {"type": "synthetic", "split": self.split, "config": c}


class TfdsSource:
  """A prepared tfds dataset with a `video` [T,H,W,3] or `image` [H,W,3] feature and a caption.

  Works with the folder builders in `vp_jax.data.builders` and the synthetic tfds builder (whose
  depth, flow and labels are passed through). Reads index ranges with tfds split slicing.
  """

  def __init__(self, builder_dir: str, split: str = "train"):
    self.builder_dir, self.split = builder_dir, split
    self._builder = None
    info = self.builder.info
    if split not in info.splits:
      raise ValueError(f"{builder_dir}: no split {split!r} (has {sorted(info.splits)}).")
    self._length = int(info.splits[split].num_examples)
    self.has_structure = "flow" in info.features and "depth" in info.features

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_builder"] = None
    return state

  @property
  def builder(self):
    if self._builder is None:
      import tensorflow_datasets as tfds
      self._builder = tfds.builder_from_directory(self.builder_dir)
    return self._builder

  def __len__(self) -> int:
    return self._length

  def read(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
    import tensorflow_datasets as tfds
    if start >= stop:
      return
    ds = self.builder.as_dataset(split=f"{self.split}[{start}:{stop}]", shuffle_files=False)
    for ex in tfds.as_numpy(ds):
      yield normalize_tfds_example(ex)

  def describe(self) -> dict[str, Any]:
    info = self.builder.info
    return {"type": "tfds", "split": self.split, "builder_dir": self.builder_dir,
            "name": info.name, "config": info.config_name, "version": str(info.version)}


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def normalize_tfds_example(ex: dict[str, Any]) -> dict[str, Any]:
  if "video" in ex:
    frames = np.asarray(ex["video"], np.uint8)
  elif "image" in ex:
    frames = np.asarray(ex["image"], np.uint8)[None]
  else:
    raise ValueError(f"tfds example has neither 'video' nor 'image' (keys {sorted(ex)}).")
  audio = np.asarray(ex.get("audio", np.zeros((0,), np.float32)), np.float32)
  out = {"id": _text(ex.get("id", "")), "frames": frames, "audio": audio,
         "has_audio": bool(ex.get("has_audio", audio.size > 0)),
         "caption": _text(ex.get("caption", "")),
         "labels": json.loads(_text(ex["labels_json"])) if "labels_json" in ex else {}}
  if "depth" in ex and "flow" in ex:
    out["depth"] = np.asarray(ex["depth"], np.float32)
    out["flow"] = np.asarray(ex["flow"], np.float32)
  return out
