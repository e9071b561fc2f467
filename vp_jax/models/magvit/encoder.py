"""MAGVIT-v2 encoder: causal 3D CNN from [-1, 1] pixels to continuous latents before LFQ.

conv_in -> per level: residual blocks at width filters*mult, then a strided downsampling conv
(space always, time where `temporal_downsample` says) -> residual blocks -> GN, swish -> 1x1x1 conv to
`embedding_dim`. [B, T, H, W, 3] -> [B, 1 + (T-1)/4, H/8, W/8, 18] for the paper preset.
"""
from __future__ import annotations

import jax
from flax import nnx

from vp_jax.models.magvit.blocks import Downsample, GroupNorm, ResBlock
from vp_jax.models.magvit.config import DTYPES, MagvitConfig
from vp_jax.models.magvit.conv import CausalConv3d


class Encoder(nnx.Module):
  def __init__(self, cfg: MagvitConfig, *, rngs: nnx.Rngs):
    dt, kt, g = DTYPES[cfg.dtype], cfg.temporal_kernel, cfg.num_groups
    widths = [cfg.filters * m for m in cfg.channel_multipliers]
    self.conv_in = CausalConv3d(3, cfg.filters, (kt, 3, 3), dtype=dt, rngs=rngs)
    blocks, downs = [], []
    width = cfg.filters
    for level, w in enumerate(widths):
      for _ in range(cfg.num_res_blocks):
        blocks.append(ResBlock(width, w, g, kt, dtype=dt, rngs=rngs))
        width = w
      if level < len(widths) - 1:
        downs.append(Downsample(width, width, cfg.temporal_downsample[level], kt, dtype=dt,
                                rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.downs = nnx.List(downs)
    self.mid = nnx.List([ResBlock(width, width, g, kt, dtype=dt, rngs=rngs)
                         for _ in range(cfg.num_res_blocks)])
    self.norm_out = GroupNorm(width, g, dtype=dt)
    self.conv_out = CausalConv3d(width, cfg.embedding_dim, (1, 1, 1), dtype=dt, rngs=rngs)
    self.num_levels, self.num_res_blocks = len(widths), cfg.num_res_blocks

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, 3] -> [B, T', H', W', D]
    h = self.conv_in(x)
    for level in range(self.num_levels):
      for i in range(self.num_res_blocks):
        h = self.blocks[level * self.num_res_blocks + i](h)
      if level < self.num_levels - 1:
        h = self.downs[level](h)
    for block in self.mid:
      h = block(h)
    return self.conv_out(jax.nn.swish(self.norm_out(h)))
