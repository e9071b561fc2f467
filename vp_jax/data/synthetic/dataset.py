"""The built-in synthetic dataset: random access, deterministic by (seed, split, index).

`SyntheticVideos(config)[i]` renders example i: frames, per-frame depth and true optical flow, a
16 kHz soundtrack, a caption and the labels it was made from. Nothing is stored — the same seed gives
byte-identical examples on any machine, in any order, in any process (numpy's PCG64 seeded with
`[seed, split, index]`), which is what lets the tokenization job shard it without coordination.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vp_jax.data import formats
from vp_jax.data.synthetic import captions, render, scene as scene_lib, sound

SPLITS = {"train": 0, "validation": 1, "test": 2}
SAMPLE_RATE = 16_000
# The labels every example carries flat (of its first object), for tf features and evaluation.
FLAT_LABELS = ("shape", "colour", "size", "direction", "speed", "rotation", "bounces",
               "background", "pattern", "camera", "num_objects")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  resolution: Any = "32x32"     # a name in formats.RESOLUTIONS or (height, width)
  num_frames: int = 17          # 1 (still images) or 1 + 4k; the paper uses 17 and 41
  num_examples: int = 1024      # per split ("train"); validation/test use num_examples // 8
  seed: int = 0
  fps: int = formats.FPS
  sample_rate: int = SAMPLE_RATE
  scene: scene_lib.SceneConfig = scene_lib.SceneConfig()

  @property
  def kind(self) -> str:
    return "image" if self.num_frames == 1 else "video"

  @property
  def hw(self) -> tuple[int, int]:
    return formats.resolution(self.resolution)

  def __post_init__(self):
    formats.check_num_frames(self.num_frames)
    formats.resolution(self.resolution)
    if self.num_examples <= 0:
      raise ValueError(f"SyntheticConfig.num_examples={self.num_examples}: must be positive.")


def flat_labels(labels: dict) -> dict[str, Any]:
  """The first object's labels plus the scene's, as plain str/int fields."""
  obj = labels["objects"][0]
  out = {k: obj[k] for k in ("shape", "colour", "size", "direction", "speed", "rotation")}
  out["bounces"] = int(obj["bounces"])
  out.update(background=labels["background"], pattern=labels["pattern"], camera=labels["camera"],
             num_objects=len(labels["objects"]))
  return out


class SyntheticVideos:
  """Random-access synthetic clips (or still images when num_frames == 1) of one split."""

  def __init__(self, config: SyntheticConfig = SyntheticConfig(), split: str = "train"):
    if split not in SPLITS:
      raise ValueError(f"split {split!r}: expected one of {sorted(SPLITS)}.")
    self.config, self.split = config, split

  def __len__(self) -> int:
    n = self.config.num_examples
    return n if self.split == "train" else max(1, n // 8)

  def scene(self, index: int) -> tuple[scene_lib.Scene, np.random.Generator]:
    c = self.config
    rng = np.random.default_rng([c.seed, SPLITS[self.split], int(index)])
    h, w = c.hw
    duration = c.num_frames / c.fps
    return scene_lib.sample_scene(rng, c.scene, height=h, width=w, duration_s=duration,
                                  still=c.kind == "image"), rng

  def labels(self, scene: scene_lib.Scene) -> dict[str, Any]:
    c = self.config
    duration = c.num_frames / c.fps
    objects = []
    for obj in scene.objects:
      times = scene_lib.bounce_times(obj, scene, duration) if c.kind == "video" else []
      objects.append(dict(shape=obj.shape, colour=obj.colour, size=obj.size,
                          direction=obj.direction, speed=obj.speed, rotation=obj.rotation,
                          bounces=len(times), bounce_times_s=[round(t, 6) for t in times],
                          start=[round(v, 6) for v in obj.start],
                          velocity=[round(v, 6) for v in obj.velocity]))
    return dict(kind=c.kind, objects=objects, background=scene.background, pattern=scene.pattern,
                camera=scene.camera)

  def _check_index(self, index: int) -> None:
    if not 0 <= index < len(self):
      raise IndexError(f"synthetic {self.split} index {index} out of range [0, {len(self)}).")

  def _caption(self, labels: dict[str, Any], rng: np.random.Generator) -> str:
    """The caption drawn from `rng` right after the scene (the soundtrack draws after it)."""
    if self.config.kind == "video":
      return captions.video_caption(labels, rng)
    return captions.image_caption(labels, rng)

  def caption(self, index: int) -> str:
    """Example `index`'s caption without rendering its frames or audio: `self[index]["caption"]`
    at the cost of sampling the scene (what the demo's SentencePiece model is trained on)."""
    self._check_index(index)
    scene, rng = self.scene(index)
    return self._caption(self.labels(scene), rng)

  def __getitem__(self, index: int) -> dict[str, Any]:
    self._check_index(index)
    c = self.config
    h, w = c.hw
    scene, rng = self.scene(index)
    labels = self.labels(scene)
    frames, depth, flow = render.render(scene, c.num_frames, h, w, c.fps)
    caption = self._caption(labels, rng)
    if c.kind == "video":
      n = formats.audio_samples(c.num_frames, c.sample_rate, c.fps)
      audio = sound.soundtrack(labels, n, c.sample_rate, rng)
    else:
      audio = np.zeros((0,), np.float32)
    return {
        "id": f"synthetic-{self.split}-{index:08d}",
        "frames": frames,        # uint8 [T, H, W, 3]
        "depth": depth,          # float32 [T, H, W], 1 = nearest
        "flow": flow,            # float32 [T, H, W, 2], forward (dx, dy) pixels
        "audio": audio,          # float32 [N] at 16 kHz ([0] for images)
        "has_audio": c.kind == "video",
        "caption": caption,
        "labels": labels,
    }

  def __iter__(self):
    for i in range(len(self)):
      yield self[i]
