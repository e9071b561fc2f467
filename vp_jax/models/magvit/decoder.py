"""MAGVIT-v2 decoder: quantized latents back to [-1, 1] pixels, mirroring the encoder.

conv_in (latent -> widest) -> residual blocks -> per level from coarse to fine: adaptive group norm
conditioned on the quantized latent (MAGVIT-v2's decoder choice; it lets the code steer the
normalization statistics at every resolution), residual blocks, then causal depth-to-space upsampling
(space always, time where the encoder downsampled it) -> GN, swish -> conv to 3 channels.
"""
from __future__ import annotations

import jax
from flax import nnx

from vp_jax.models.magvit.blocks import AdaptiveGroupNorm, GroupNorm, ResBlock, Upsample
from vp_jax.models.magvit.config import DTYPES, MagvitConfig
from vp_jax.models.magvit.conv import CausalConv3d


class Decoder(nnx.Module):
  def __init__(self, cfg: MagvitConfig, *, rngs: nnx.Rngs):
    dt, kt, g = DTYPES[cfg.dtype], cfg.temporal_kernel, cfg.num_groups
    widths = [cfg.filters * m for m in cfg.channel_multipliers]
    width = widths[-1]
    self.conv_in = CausalConv3d(cfg.embedding_dim, width, (kt, 3, 3), dtype=dt, rngs=rngs)
    self.mid = nnx.List([ResBlock(width, width, g, kt, dtype=dt, rngs=rngs)
                         for _ in range(cfg.decoder_blocks)])
    adanorms, blocks, ups = [], [], []
    for level in reversed(range(len(widths))):
      w = widths[level]
      adanorms.append(AdaptiveGroupNorm(width, cfg.embedding_dim, g, dtype=dt, rngs=rngs)
                      if cfg.adaptive_group_norm else GroupNorm(width, g, dtype=dt))
      for _ in range(cfg.decoder_blocks):
        blocks.append(ResBlock(width, w, g, kt, dtype=dt, rngs=rngs))
        width = w
      if level > 0:
        ups.append(Upsample(width, width, cfg.temporal_downsample[level - 1], kt,
                            kernel=cfg.upsample_kernel, dtype=dt, rngs=rngs))
    self.adanorms, self.blocks, self.ups = nnx.List(adanorms), nnx.List(blocks), nnx.List(ups)
    self.norm_out = GroupNorm(width, g, dtype=dt)
    self.conv_out = CausalConv3d(width, 3, (kt, 3, 3), dtype=dt, rngs=rngs)
    self.num_levels, self.num_res_blocks = len(widths), cfg.decoder_blocks
    self.adaptive = cfg.adaptive_group_norm

  def __call__(self, z: jax.Array) -> jax.Array:  # [B, T', H', W', D] -> [B, T, H, W, 3]
    h = self.conv_in(z)
    for block in self.mid:
      h = block(h)
    for i in range(self.num_levels):
      h = self.adanorms[i](h, z) if self.adaptive else self.adanorms[i](h)
      for j in range(self.num_res_blocks):
        h = self.blocks[i * self.num_res_blocks + j](h)
      if i < self.num_levels - 1:
        h = self.ups[i](h)
    return self.conv_out(jax.nn.swish(self.norm_out(h)))
