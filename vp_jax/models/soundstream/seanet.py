"""SEANet encoder and decoder (SoundStream section 3.1, Figure 4), fully causal.

Encoder: conv(1 -> C, k7), then per stride S_i a block [residual units with dilations 1, 3, 9 at
width C*m_{i-1}; ELU; strided conv (k = 2 S_i) to C*m_i], then ELU and conv(k3) to D.
Decoder mirrors it: conv(D -> C*m_last, k7), per block [ELU; transposed conv (k = 2 S) down to the
previous width; residual units], then ELU and conv(C -> 1, k7). A residual unit is
x + conv1x1(ELU(dilated conv k7(ELU(x)))). Shapes: wave [B, N, 1] <-> latents [B, N // 320, D].
"""
from __future__ import annotations

import jax
from flax import nnx

from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.conv import CausalConv1d, CausalConvTranspose1d
from vp_jax.parallel.sharding import constrain

ACT = ("batch", "length", "act_embed")


class ResidualUnit(nnx.Module):
  def __init__(self, width: int, dilation: int, kernel: int, *, rngs: nnx.Rngs):
    self.dilated = CausalConv1d(width, width, kernel, dilation=dilation, rngs=rngs)
    self.pointwise = CausalConv1d(width, width, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, W]
    return x + self.pointwise(jax.nn.elu(self.dilated(jax.nn.elu(x))))


class EncoderBlock(nnx.Module):
  def __init__(self, width_in: int, width_out: int, stride: int, cfg: SoundStreamConfig, *,
               rngs: nnx.Rngs):
    self.units = nnx.List([ResidualUnit(width_in, d, cfg.residual_kernel, rngs=rngs)
                           for d in cfg.dilations])
    self.down = CausalConv1d(width_in, width_out, 2 * stride, stride=stride, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, Win] -> [B, N // S, Wout]
    for unit in self.units:
      x = unit(x)
    return constrain(self.down(jax.nn.elu(x)), ACT)


class DecoderBlock(nnx.Module):
  def __init__(self, width_in: int, width_out: int, stride: int, cfg: SoundStreamConfig, *,
               rngs: nnx.Rngs):
    self.up = CausalConvTranspose1d(width_in, width_out, stride, rngs=rngs)
    self.units = nnx.List([ResidualUnit(width_out, d, cfg.residual_kernel, rngs=rngs)
                           for d in cfg.dilations])

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, Win] -> [B, T * S, Wout]
    x = self.up(jax.nn.elu(x))
    for unit in self.units:
      x = unit(x)
    return constrain(x, ACT)


def _widths(cfg: SoundStreamConfig) -> list[int]:
  return [cfg.channels] + [cfg.channels * m for m in cfg.channel_mults]


class Encoder(nnx.Module):
  """wave [B, N] -> latents [B, N // hop, D]."""

  def __init__(self, cfg: SoundStreamConfig, *, rngs: nnx.Rngs):
    widths = _widths(cfg)
    self.stem = CausalConv1d(1, cfg.channels, 7, rngs=rngs)
    self.blocks = nnx.List([EncoderBlock(widths[i], widths[i + 1], s, cfg, rngs=rngs)
                            for i, s in enumerate(cfg.strides)])
    self.head = CausalConv1d(widths[-1], cfg.embed_dim, 3, rngs=rngs)

  def __call__(self, wave: jax.Array) -> jax.Array:
    x = self.stem(wave[..., None])            # [B, N, C]
    for block in self.blocks:
      x = block(x)                            # ... -> [B, T, C * m_last]
    return constrain(self.head(jax.nn.elu(x)), ACT)   # [B, T, D]


class Decoder(nnx.Module):
  """latents [B, T, D] -> wave [B, T * hop]."""

  def __init__(self, cfg: SoundStreamConfig, *, rngs: nnx.Rngs):
    widths = _widths(cfg)
    self.stem = CausalConv1d(cfg.embed_dim, widths[-1], 7, rngs=rngs)
    self.blocks = nnx.List([
        DecoderBlock(widths[i + 1], widths[i], s, cfg, rngs=rngs)
        for i, s in reversed(list(enumerate(cfg.strides)))])
    self.head = CausalConv1d(cfg.channels, 1, 7, rngs=rngs)

  def __call__(self, latents: jax.Array) -> jax.Array:
    x = self.stem(latents)                    # [B, T, C * m_last]
    for block in self.blocks:
      x = block(x)                            # ... -> [B, T * hop, C]
    return self.head(jax.nn.elu(x))[..., 0]   # [B, T * hop]
