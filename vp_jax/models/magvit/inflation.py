"""Inflation (MAGVIT-v2's "image training, inflation and video training"): turn the 2D image model
(temporal kernel 1) into the causal 3D video model (temporal kernel 3).

Every [1, kh, kw, in, out] kernel becomes [3, kh, kw, in, out] with the 2D weights in the last
temporal slice (the current frame under causal padding) and zeros in the earlier slices; all other
parameters are copied. With zero causal padding the inflated model computes, for the first frame,
exactly what the image model computes, and the video training starts from the image model's quality.

One part of the video decoder has no trained image counterpart: a temporal depth-to-space upsampling
makes t = 2 sub-frames per frame, and on a single image (T = 1) the first sub-frame is dropped, so
image training only ever trains the channels of the last one. `tie_temporal_subframes` copies those
trained channels (kernel and bias) onto the earlier sub-frames. Then the inflated model decodes every
frame of a static video exactly as the image model decodes the image (test), and on moving video
each 4-frame chunk starts as its last frame repeated, instead of three frames from untrained
channels (measured on the small preset: held-out frames 1-3 of each chunk at ~15.8 dB before
video training without the copy; docs/magvit.md). MAGVIT-v2 does not say how it initializes these
channels; repeating the trained frame is the choice that keeps "the inflated model starts from the
image model's quality" true for every frame. `MagvitConfig.temporal_subframe_init = "blend"` keeps it
true as well (a static video still decodes as the image) and starts the in-between frames as a
feature-space interpolation of the neighbouring latent frames instead of a copy of the later one: on
moving video the decoded chunk then starts near the keyframe-blend baseline
(`evaluate.keyframe_blend`) rather than a hold.

The video decoder may also have more residual blocks per level than the image decoder
(`MagvitConfig.decoder_res_blocks`): temporal modelling is what the video stage adds, and a decoder
that has to rebuild four frames from one latent frame may need more capacity than one that rebuilds
one. `grow_decoder_blocks` keeps each level's trained blocks first and appends the new ones with
their last convolution zeroed, so every new block is an identity (x + 0) and the grown model still
computes exactly the image model's output (the "zero-init residual" of Goyal et al. 2017, also how
progressive-growing setups add depth without a restart).

`temporal_tap_update_scale` is the optimizer side of inflation: a learning-rate multiplier for the
earlier temporal slices that start at zero, so the video stage can grow them at a rate of their own
while the trained current-frame slices keep the fine-tuning rate.
"""
from __future__ import annotations

from typing import Any, TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.models.magvit.config import TEMPORAL_SUBFRAME_INITS

if TYPE_CHECKING:
  from vp_jax.models.magvit.config import MagvitConfig


def inflate_kernel(kernel: Any, temporal_kernel: int) -> Any:
  """[1, kh, kw, in, out] -> [temporal_kernel, kh, kw, in, out], weights in the last slice."""
  if kernel.ndim != 5 or kernel.shape[0] != 1:
    raise ValueError(f"inflate_kernel: expected a [1, kh, kw, in, out] kernel, got shape "
                     f"{kernel.shape}.")
  pad = [(temporal_kernel - 1, 0)] + [(0, 0)] * 4
  return jnp.pad(kernel, pad) if isinstance(kernel, jax.Array) else np.pad(kernel, pad)


def temporal_tap_update_scale(multiplier: float):
  """An `optim.UpdateScale` for the tokenizer: a [t, kh, kw, in, out] kernel (t > 1) gets
  `multiplier` on its slices 0..t-2 and 1 on its last; every other parameter 1 (None)."""

  def scale(path: str, shape: tuple[int, ...]):
    del path
    if len(shape) != 5 or shape[0] == 1:
      return None
    factor = np.full((shape[0], 1, 1, 1, 1), multiplier, np.float32)
    factor[-1] = 1.0
    return factor

  return scale


def inflate_params(image_params: dict, video_template: dict, path: str = "") -> dict:
  """Pure-dict params of the image model -> params shaped like `video_template` (a pure dict of
  arrays or ShapeDtypeStructs of the video model). Errors name the first mismatching parameter."""
  if isinstance(video_template, dict):
    if not isinstance(image_params, dict) or set(image_params) != set(video_template):
      have = sorted(image_params) if isinstance(image_params, dict) else type(image_params)
      raise ValueError(f"inflate_params: at {path or '/'} the image model has {have}, the video "
                       f"model {sorted(video_template)}.")
    return {k: inflate_params(image_params[k], video_template[k], f"{path}/{k}")
            for k in video_template}
  src_shape, dst_shape = tuple(image_params.shape), tuple(video_template.shape)
  if src_shape == dst_shape:
    return image_params
  if len(src_shape) == 5 and src_shape[0] == 1 and src_shape[1:] == dst_shape[1:]:
    return inflate_kernel(image_params, dst_shape[0])
  raise ValueError(f"inflate_params: {path} has shape {src_shape} in the image model and "
                   f"{dst_shape} in the video model; only temporal kernel size may differ.")


def temporal_upsample_indices(cfg: "MagvitConfig") -> list[int]:
  """Indices into the decoder's `ups` of the upsamplings that double time (coarse to fine)."""
  levels = len(cfg.channel_multipliers)
  return [i for i, level in enumerate(reversed(range(1, levels)))
          if cfg.temporal_downsample[level - 1]]


def tie_temporal_subframes(params: dict, cfg: "MagvitConfig") -> dict:
  """Tokenizer pure-dict params -> the same with each temporal upsampling conv's earlier sub-frame
  filled from its last, trained one (`cfg.temporal_subframe_init`). The conv's output channels are
  laid out (sub-frame, 2, 2, C) (`blocks.depth_to_space`), so sub-frame s is the block
  [s * 4C, (s + 1) * 4C); sub-frame 1 of input frame j is output frame 2j, sub-frame 0 is 2j - 1.

  "repeat": sub-frame 0 gets sub-frame 1's kernel and bias, so frame 2j - 1 = frame 2j.
  "blend": sub-frame 0 gets the mean of sub-frame 1's kernel and that kernel shifted one temporal
  tap into the past, and the same bias: after inflation (weights only in the last tap) frame
  2j - 1 = (f(x[j-1]) + f(x[j])) / 2 before the next nonlinearity. Two such upsamplings place each
  4-frame chunk's frames at 1/4, 1/2, 3/4 of the way between consecutive latent frames."""
  mode = cfg.temporal_subframe_init
  if mode not in TEMPORAL_SUBFRAME_INITS:
    raise ValueError(f"tie_temporal_subframes: temporal_subframe_init={mode!r}; use one of "
                     f"{TEMPORAL_SUBFRAME_INITS}.")
  xp = lambda w: jnp if isinstance(w, jax.Array) else np
  ups = dict(params["decoder"]["ups"])
  for i in temporal_upsample_indices(cfg):
    conv = dict(ups[i]["conv"])
    w, b = conv["kernel"], conv["bias"]                         # [kt, kh, kw, in, 2 * 4C], [2 * 4C]
    block = w.shape[-1] // 2                                    # t = 2 sub-frames
    last = w[..., block:]
    first = last
    if mode == "blend":
      if w.shape[0] < 2:
        raise ValueError(f"tie_temporal_subframes: 'blend' needs temporal taps; decoder ups[{i}] "
                         f"has a kernel of shape {tuple(w.shape)}.")
      earlier = xp(w).concatenate([last[1:], xp(w).zeros_like(last[:1])], axis=0)
      first = (last + earlier) / 2
    conv["kernel"] = xp(w).concatenate([first, last], axis=-1)
    conv["bias"] = xp(b).concatenate([b[block:], b[block:]], axis=-1)
    ups[i] = {**ups[i], "conv": conv}
  return {**params, "decoder": {**params["decoder"], "ups": ups}}


def _identity_block(block: dict) -> dict:
  """A ResBlock's pure-dict params with conv2 zeroed: x + conv2(...) = x (same widths, no skip)."""
  zeros = lambda w: jnp.zeros_like(w) if isinstance(w, jax.Array) else np.zeros(w.shape, w.dtype)
  return {**block, "conv2": {k: zeros(v) for k, v in block["conv2"].items()}}


def grow_decoder_blocks(params: dict, blocks_from: int, template: dict, blocks_to: int) -> dict:
  """Tokenizer pure-dict params whose decoder has `blocks_from` residual blocks per level (and in
  its middle stage) -> params shaped like `template` (the tokenizer with `blocks_to` >= blocks_from;
  arrays, e.g. freshly initialized params). Level l's trained blocks stay its first ones; each new
  block is the template's block with conv2 zeroed, an identity, so the output is unchanged (test).
  Encoder, quantizer and the rest of the decoder are taken from `params`."""
  if blocks_to < blocks_from:
    raise ValueError(f"grow_decoder_blocks: cannot shrink the decoder from {blocks_from} to "
                     f"{blocks_to} residual blocks per level.")
  dec, tmpl = params["decoder"], template["decoder"]
  levels = len(dec["blocks"]) // blocks_from
  if len(tmpl["blocks"]) != levels * blocks_to or len(tmpl["mid"]) != blocks_to:
    raise ValueError(f"grow_decoder_blocks: the template decoder has {len(tmpl['blocks'])} level "
                     f"blocks and {len(tmpl['mid'])} middle blocks; expected {levels * blocks_to} "
                     f"and {blocks_to} for {levels} levels x {blocks_to}.")

  def grown(old: dict, new: dict, n_levels: int) -> dict:
    out = {}
    for level in range(n_levels):
      for j in range(blocks_to):
        out[level * blocks_to + j] = (old[level * blocks_from + j] if j < blocks_from
                                      else _identity_block(new[level * blocks_to + j]))
    return out

  decoder = {**dec, "blocks": grown(dec["blocks"], tmpl["blocks"], levels),
             "mid": grown(dec["mid"], tmpl["mid"], 1)}
  return {**params, "decoder": decoder}


def inflate_tokenizer(image_params: dict, video_template: dict, cfg: "MagvitConfig",
                      image_decoder_blocks: int | None = None) -> dict:
  """The image tokenizer's params inflated into the video tokenizer `cfg` (`inflate_params`), with
  the temporal upsamplings' sub-frames tied (`tie_temporal_subframes`). When the image decoder had
  fewer residual blocks per level (`image_decoder_blocks`) than `cfg.decoder_blocks`, the new ones
  are added as identities first (`grow_decoder_blocks`)."""
  if image_decoder_blocks is not None and image_decoder_blocks != cfg.decoder_blocks:
    image_params = grow_decoder_blocks(image_params, image_decoder_blocks, video_template,
                                       cfg.decoder_blocks)
  return tie_temporal_subframes(inflate_params(image_params, video_template), cfg)
