"""Perceptual loss network: LPIPS (Zhang et al. 2018) on VGG16 features, frozen, per frame.

d(x, y) = sum_l mean_hw || w_l * (n(f_l(x)) - n(f_l(y))) ||^2, with f_l the VGG16 activations after
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, n(.) unit-normalization over channels and w_l the LPIPS
linear heads. Inputs are [-1, 1] images, shifted/scaled by LPIPS' constants.

Weights come from the public checkpoints: torchvision's VGG16 state dict (`features.{i}.weight`
[out, in, 3, 3] / `.bias`, i = the index of each conv in `vgg16().features`) and LPIPS' `vgg.pth`
(`lin{l}.model.1.weight` [1, C_l, 1, 1]); `.pth` files are read with torch (imported only then),
`.npz` files with the same keys with numpy. The weights live in `Frozen` variables: carried in the
train state and checkpoints like other model variables, never touched by an optimizer.
"""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.models.magvit.config import PerceptualConfig
from vp_jax.models.magvit.conv import variance_scaling_uniform

LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class Frozen(nnx.Variable):
  """A fixed (pretrained) weight: a model variable that is not an `nnx.Param`."""


def vgg_conv_indices(convs_per_block: tuple[int, ...]) -> list[list[int]]:
  """The `features.{i}` index of every conv in torchvision's VGG, per block (conv, ReLU pairs, then
  one max-pool per block): VGG16 -> [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]."""
  out, i = [], 0
  for n in convs_per_block:
    out.append([i + 2 * j for j in range(n)])
    i += 2 * n + 1
  return out


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: np.asarray(f[k], np.float32) for k in f.files}
  try:
    import torch
  except ImportError as e:  # pragma: no cover - torch is a test/extra dependency
    raise ImportError(f"Reading {path} needs torch (pip install torch==2.13.0) or an .npz copy "
                      f"with the same keys.") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  return {k: v.detach().float().numpy() for k, v in sd.items()}


@functools.lru_cache(maxsize=4)
def load_lpips_weights(cfg: PerceptualConfig) -> dict[str, np.ndarray]:
  """Reads the public VGG16 + LPIPS checkpoints into this module's layout: `conv{b}_{j}/kernel`
  [3, 3, in, out], `conv{b}_{j}/bias` [out], `lin{l}` [C_l]. Raises naming any missing or misshapen
  key."""
  vgg = _read_state_dict(cfg.vgg_weights)
  lin = _read_state_dict(cfg.lpips_weights)
  out, cin = {}, 3
  for b, (indices, width) in enumerate(zip(vgg_conv_indices(cfg.convs_per_block), cfg.widths)):
    for j, idx in enumerate(indices):
      for part, shape in (("weight", (width, cin, 3, 3)), ("bias", (width,))):
        key = f"features.{idx}.{part}"
        if key not in vgg:
          raise KeyError(f"{cfg.vgg_weights}: missing {key!r} (VGG layout {cfg.widths} x "
                         f"{cfg.convs_per_block}).")
        if vgg[key].shape != shape:
          raise ValueError(f"{cfg.vgg_weights}: {key!r} has shape {vgg[key].shape}, expected "
                           f"{shape}.")
      out[f"conv{b}_{j}/kernel"] = vgg[f"features.{idx}.weight"].transpose(2, 3, 1, 0)
      out[f"conv{b}_{j}/bias"] = vgg[f"features.{idx}.bias"]
      cin = width
    key = f"lin{b}.model.1.weight"
    if key not in lin:
      raise KeyError(f"{cfg.lpips_weights}: missing {key!r}.")
    if lin[key].shape != (1, width, 1, 1):
      raise ValueError(f"{cfg.lpips_weights}: {key!r} has shape {lin[key].shape}, expected "
                       f"{(1, width, 1, 1)}.")
    out[f"lin{b}"] = lin[key].reshape(width)
  return out


class LPIPS(nnx.Module):
  def __init__(self, cfg: PerceptualConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    loaded: Mapping[str, np.ndarray] | None = None
    if cfg.vgg_weights or cfg.lpips_weights:
      if not (cfg.vgg_weights and cfg.lpips_weights):
        raise ValueError("PerceptualConfig: give both vgg_weights and lpips_weights (or neither).")
      loaded = load_lpips_weights(cfg)
    init = variance_scaling_uniform(2.0)
    self.weights = nnx.Dict()
    cin = 3
    for b, (n, width) in enumerate(zip(cfg.convs_per_block, cfg.widths)):
      for j in range(n):
        for name, shape in ((f"conv{b}_{j}/kernel", (3, 3, cin, width)),
                            (f"conv{b}_{j}/bias", (width,))):
          value = (loaded[name] if loaded is not None else
                   init(rngs.params(), shape) if name.endswith("kernel") else np.zeros(shape))
          self.weights[name.replace("/", "_")] = Frozen(jnp.asarray(value, jnp.float32))
        cin = width
      value = loaded[f"lin{b}"] if loaded is not None else np.full((width,), 1.0 / width)
      self.weights[f"lin{b}"] = Frozen(jnp.asarray(value, jnp.float32))

  def features(self, x: jax.Array) -> list[jax.Array]:  # [N, H, W, 3] in [-1, 1]
    h = (x.astype(jnp.float32) - LPIPS_SHIFT) / LPIPS_SCALE
    feats = []
    for b, n in enumerate(self.cfg.convs_per_block):
      if b > 0:
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      for j in range(n):
        k = jax.lax.stop_gradient(self.weights[f"conv{b}_{j}_kernel"][...])
        h = jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h + jax.lax.stop_gradient(self.weights[f"conv{b}_{j}_bias"][...]))
      feats.append(h)
    return feats

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image LPIPS distance: [N, H, W, 3] x2 in [-1, 1] -> [N]."""
    total = 0.0
    for b, (fx, fy) in enumerate(zip(self.features(x), self.features(y))):
      nx = fx / (jnp.sqrt(jnp.sum(fx * fx, -1, keepdims=True)) + 1e-10)
      ny = fy / (jnp.sqrt(jnp.sum(fy * fy, -1, keepdims=True)) + 1e-10)
      lin = jax.lax.stop_gradient(self.weights[f"lin{b}"][...])
      total = total + jnp.mean(jnp.sum(jnp.square(nx - ny) * lin, -1), axis=(1, 2))
    return total
