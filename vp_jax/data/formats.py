"""Video formats shared by data, tokenization and tasks: resolutions, clip lengths, frame rate.

VideoPoet (paper 3.1, 4.1) trains on two resolutions x two lengths at 8 fps. "128x224" is the
portrait format: width 128, height 224 — frames are `[T, 224, 128, 3]` and the MAGVIT-v2 latent is
(T', 28, 16) (the paper's (5, 28, 16) = 2240 tokens for 17 frames; its SR cascade goes from 224x128 to
896x512, height first). Everywhere in vp_jax a resolution is `(height, width)`. The small presets
keep the same 8x spatial / 4x temporal compression for fast CPU runs.
"""
from __future__ import annotations

FPS = 8
CLIP_LENGTHS = (17, 41)  # 2.125 s and 5.125 s at 8 fps; 1 + 4k frames for the causal tokenizer.
IMAGE_FRAMES = 1

# name -> (height, width)
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "128x128": (128, 128),
    "128x224": (224, 128),  # portrait: W=128, H=224 (paper's naming is width x height)
    "64x64": (64, 64),      # small: CPU experiments
    "32x32": (32, 32),      # tiny: tests and the CPU demo
}


def resolution(name_or_hw) -> tuple[int, int]:
  """'128x224' or (H, W) -> (H, W), with a clear error for anything else."""
  if isinstance(name_or_hw, str):
    if name_or_hw not in RESOLUTIONS:
      raise ValueError(f"resolution {name_or_hw!r}: unknown; known: {sorted(RESOLUTIONS)} "
                       "(or pass (height, width)).")
    return RESOLUTIONS[name_or_hw]
  hw = tuple(int(x) for x in name_or_hw)
  if len(hw) != 2 or min(hw) <= 0 or hw[0] % 8 or hw[1] % 8:
    raise ValueError(f"resolution {name_or_hw!r}: expected (height, width), both positive "
                     "multiples of 8 (the tokenizer's spatial stride).")
  return hw  # type: ignore[return-value]


def check_num_frames(num_frames: int) -> int:
  """Clip lengths the causal tokenizer accepts: 1 (image) or 1 + 4k."""
  if num_frames < 1 or (num_frames - 1) % 4:
    raise ValueError(f"num_frames={num_frames}: must be 1 or 1 + 4k (17 and 41 in the paper).")
  return int(num_frames)


def audio_samples(num_frames: int, sample_rate: int = 16_000, fps: int = FPS) -> int:
  """Samples of audio covering a clip: 17 frames at 8 fps -> 2.125 s -> 34,000 samples at 16 kHz."""
  return int(round(num_frames * sample_rate / fps))

