"""Inflation (MAGVIT-v2's "image training, inflation and video training"): turn the 2D image model
(temporal kernel 1) into the causal 3D video model (temporal kernel 3).

Every [1, kh, kw, in, out] kernel becomes [3, kh, kw, in, out] with the 2D weights in the last
temporal slice (the current frame under causal padding) and zeros in the earlier slices; all other
parameters are copied. With zero causal padding the inflated model computes, for the first frame,
exactly what the image model computes, and the video training starts from the image model's quality.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def inflate_kernel(kernel: Any, temporal_kernel: int) -> Any:
  """[1, kh, kw, in, out] -> [temporal_kernel, kh, kw, in, out], weights in the last slice."""
  if kernel.ndim != 5 or kernel.shape[0] != 1:
    raise ValueError(f"inflate_kernel: expected a [1, kh, kw, in, out] kernel, got shape "
                     f"{kernel.shape}.")
  pad = [(temporal_kernel - 1, 0)] + [(0, 0)] * 4
  return jnp.pad(kernel, pad) if isinstance(kernel, jax.Array) else np.pad(kernel, pad)


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
