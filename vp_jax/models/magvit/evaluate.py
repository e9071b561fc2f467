"""Held-out reconstruction quality of a trained video tokenizer on the built-in moving-shape clips.

The recipe's figures in docs/magvit.md and the slow PSNR test (tests/test_magvit_train.py) come from
`score_held_out`, and `launch/eval_video_tokenizer.py` runs it on any workdir and step, so a figure
in the docs is one command away from being re-measured.

Held-out clips are `synthetic.moving_shapes_batch(HELD_OUT_SEED, i, block_size, T, H, W)` for block
i = 0, 1, ...: a seed that no training stream uses (training draws from TrainerConfig.seed, 0 in
the gin files). PSNR is in [0, 1] pixel units, per clip, then averaged. Block means are reported
next to the overall mean because a block of 16 clips alone is noisy: 16-clip blocks of one model
differ by up to ~1.5 dB (docs/magvit.md "Status"), more than most recipe changes being compared.

For clips, the score also carries a baseline for the frames inside each 4-frame chunk: the same
reconstruction with every in-between frame replaced by the linear blend of the decoded chunk-end
frames around it (`keyframe_blend`). Where the model's frame scores no better than that blend, its
decoder is not using what its latent says about motion beyond interpolating its own keyframes
(docs/magvit_experiments.md, stop 21). The encoder side of the same question: the clips are encoded
again with every in-between frame replaced by the linear blend of the true chunk ends, and the
score says how much of the chunk latents (latent frames 1, 2, ...) changed. An inflated model
starts at exactly zero (its temporal taps before the last are zero, so a chunk's latent sees only
the chunk's last frame); whatever a video stage makes of it is what its tokens carry about motion.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vp_jax.models.magvit import synthetic

HELD_OUT_SEED = 12345


def psnr_db(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-example PSNR in dB of two [B, ...] arrays in [0, 1] (MSE floored at 1e-12)."""
  mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2,
                axis=tuple(range(1, np.ndim(x))))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def frame_psnr_db(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-frame PSNR [B, T] in dB of two [B, T, H, W, C] clips in [0, 1]."""
  b, t = np.shape(x)[:2]
  return psnr_db(np.reshape(x, (b * t, -1)), np.reshape(y, (b * t, -1))).reshape(b, t)


def keyframe_blend(clips: np.ndarray, every: int = 4) -> np.ndarray:
  """[B, T, H, W, C] clips with T = 1 + every * k -> float32 copies whose frames between two
  keyframes (0, every, 2 every, ...) are the linear blend of those two keyframes."""
  t = np.shape(clips)[1]
  if every < 1 or (t - 1) % every:
    raise ValueError(f"keyframe_blend: {t} frames are not 1 + {every} * k.")
  out = np.asarray(clips, np.float32).copy()
  for start in range(0, t - 1, every):
    first, last = out[:, start], out[:, start + every]    # keyframes: never written
    for j in range(1, every):
      out[:, start + j] = (1 - j / every) * first + (j / every) * last
  return out


def latent_change(ids: np.ndarray, other: np.ndarray) -> tuple[float, float]:
  """Two integer id arrays [B, T', ...] of the same clips' latents -> (the fraction of positions
  in latent frames 1.. whose ids differ, the mean number of differing bits per such position)."""
  a, b = np.asarray(ids)[:, 1:], np.asarray(other)[:, 1:]
  if a.shape != b.shape or a.size == 0:
    raise ValueError(f"latent_change: ids {np.shape(ids)} and {np.shape(other)} must have the "
                     f"same shape with at least 2 latent frames.")
  flipped = np.bitwise_xor(a.astype(np.int64), b.astype(np.int64))
  return float(np.mean(flipped != 0)), float(np.mean(np.bitwise_count(flipped)))


@dataclasses.dataclass(frozen=True)
class HeldOutScore:
  step: int | None                    # the checkpoint step scored (None: built in memory)
  clips: int
  psnr_db: float                      # mean over all clips
  block_psnr_db: tuple[float, ...]    # mean of each block of clips, in block order
  frame_psnr_db: tuple[float, ...]    # [T]: each frame's PSNR, mean over all clips
  distinct_codes: int                 # distinct token ids over all clips' positions
  positions: int                      # token positions over all clips
  # [T]: each frame's PSNR after `keyframe_blend` of the reconstruction, mean over all clips
  # (empty for images)
  blend_frame_psnr_db: tuple[float, ...] = ()
  # `latent_change` of the clips' ids against those of their keyframe blend: the fraction of chunk
  # tokens whose id changes, and the mean number of their bits that flip (None for images)
  inbetween_token_change: float | None = None
  inbetween_bit_change: float | None = None

  def summary(self) -> str:
    frames = self.frame_psnr_db
    per_frame = "" if len(frames) == 1 else (
        f"; frame 0 {frames[0]:.2f}, frames 1-{len(frames) - 1} {min(frames[1:]):.2f}-"
        f"{max(frames[1:]):.2f} dB")
    if self.blend_frame_psnr_db:
      per_frame += (f"; frames 1-{len(frames) - 1} mean {np.mean(frames[1:]):.2f} dB, "
                    f"{np.mean(self.blend_frame_psnr_db[1:]):.2f} with each chunk's in-between "
                    f"frames blended from its decoded ends")
    if self.inbetween_token_change is not None:
      per_frame += (f"; in-between frames set to the blend of true chunk ends change "
                    f"{100 * self.inbetween_token_change:.1f} % of chunk tokens "
                    f"({self.inbetween_bit_change:.3f} bits per token)")
    return (f"step {self.step}: held-out PSNR {self.psnr_db:.2f} dB over {self.clips} clips "
            f"(blocks: {' '.join(f'{b:.2f}' for b in self.block_psnr_db)}{per_frame}); "
            f"{self.distinct_codes} distinct codes over {self.positions} positions")

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def score_held_out(tokenizer, *, num_frames: int = 17, height: int = 64, width: int = 64,
                   blocks: int = 8, block_size: int = 16, seed: int = HELD_OUT_SEED,
                   keyframe_every: int = 4) -> HeldOutScore:
  """Round-trips `blocks` x `block_size` held-out clips [block_size, T, H, W, 3] (one block at a
  time, to bound memory) through `tokenizer.encode` / `decode` (a VideoTokenizer or anything with
  the same two methods) and scores the reconstructions; clips of 1 + keyframe_every * k frames
  also get the keyframe-blend baseline (`keyframe_every`: the tokenizer's temporal factor) and
  are encoded a second time with their own in-between frames blended, for `latent_change`."""
  if blocks < 1 or block_size < 1 or keyframe_every < 1:
    raise ValueError(f"score_held_out: blocks={blocks}, block_size={block_size} and "
                     f"keyframe_every={keyframe_every} must be >= 1.")
  with_blend = num_frames > 1 and (num_frames - 1) % keyframe_every == 0
  clip_psnr, frame_psnr, blend_psnr, changes, codes, positions = [], [], [], [], set(), 0
  for index in range(blocks):
    clips = synthetic.moving_shapes_batch(seed, index, block_size, num_frames, height, width)
    ids = np.asarray(tokenizer.encode(clips))
    recon = np.asarray(tokenizer.decode(ids), np.float32)
    target = clips.astype(np.float32) / 255.0
    clip_psnr.append(psnr_db(recon, target))
    frame_psnr.append(frame_psnr_db(recon, target))
    if with_blend:
      blend_psnr.append(frame_psnr_db(keyframe_blend(recon, keyframe_every), target))
      # Blended in uint8 like the clips themselves, so the keyframes reach the encoder unchanged.
      blended = np.rint(keyframe_blend(clips, keyframe_every)).astype(clips.dtype)
      changes.append(latent_change(ids, np.asarray(tokenizer.encode(blended))))
    codes.update(np.unique(ids).tolist())
    positions += ids.size
  frames = np.concatenate(frame_psnr).mean(axis=0)
  # every block has the same number of chunk positions: a plain mean over blocks
  token_change, bit_change = np.mean(changes, axis=0) if changes else (None, None)
  blend = np.concatenate(blend_psnr).mean(axis=0) if with_blend else ()
  return HeldOutScore(step=getattr(tokenizer, "step", None), clips=blocks * block_size,
                      psnr_db=float(np.mean(clip_psnr)),
                      block_psnr_db=tuple(float(np.mean(b)) for b in clip_psnr),
                      frame_psnr_db=tuple(float(f) for f in frames),
                      distinct_codes=len(codes), positions=positions,
                      blend_frame_psnr_db=tuple(float(f) for f in blend),
                      inbetween_token_change=None if token_change is None else float(token_change),
                      inbetween_bit_change=None if bit_change is None else float(bit_change))
