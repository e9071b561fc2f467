"""The two discriminators of SoundStream (section 3.4): a multi-scale complex-STFT discriminator
and a multi-scale waveform discriminator (MelGAN). Each returns, per sub-discriminator, its logits
and its intermediate feature maps (for the feature-matching loss).

STFT discriminator at window W (hop W/4): the complex STFT as 2 channels [B, frames, bins, 2] ->
conv 7x7 -> `stft_disc_layers` x [conv (3, 9) with (time, freq) strides alternating (1, 2),
(2, 2), ..., width x2 up to 8C] -> conv 3x3 to 1 logit per (frame, band). Multi-scale over
`stft_disc_ffts` (EnCodec's MS-STFTD).
Waveform discriminator: conv k15 -> `wave_disc_layers` x grouped conv (k41, stride 4, width x4 up
to `wave_disc_max_width`) -> conv k5 -> conv k3 to 1 logit per position; scale i sees the wave
average-pooled 2^i x.
LeakyReLU(0.2) throughout. Neither needs to be causal: they only exist during training.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models.soundstream import spectral
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.conv import CausalConv1d, Conv2d

Features = list[jax.Array]


def _lrelu(x):
  return jax.nn.leaky_relu(x, 0.2)


class STFTDiscriminator(nnx.Module):
  def __init__(self, n_fft: int, channels: int, layers: int, *, rngs: nnx.Rngs):
    self.n_fft = n_fft
    widths = [min(channels * 2 ** i, channels * 8) for i in range(layers + 1)]
    self.stem = Conv2d(2, widths[0], (7, 7), rngs=rngs)
    # (time, freq) strides alternate (1, 2), (2, 2), ... as in SoundStream's STFT discriminator.
    self.convs = nnx.List([Conv2d(widths[i], widths[i + 1], (3, 9), (1 + i % 2, 2), rngs=rngs)
                           for i in range(layers)])
    self.head = Conv2d(widths[-1], 1, (3, 3), rngs=rngs)

  def __call__(self, wave: jax.Array) -> tuple[jax.Array, Features]:  # [B, N]
    spec = spectral.stft(wave, self.n_fft)                              # [B, F, bins] complex
    x = jnp.stack([spec.real, spec.imag], -1).astype(wave.dtype)        # [B, F, bins, 2]
    feats = []
    x = _lrelu(self.stem(x))
    feats.append(x)
    for conv in self.convs:
      x = _lrelu(conv(x))
      feats.append(x)
    return self.head(x), feats


class WaveDiscriminator(nnx.Module):
  def __init__(self, channels: int, layers: int, *, max_width: int = 1024, rngs: nnx.Rngs):
    self.stem = CausalConv1d(1, channels, 15, rngs=rngs)
    convs, width = [], channels
    for _ in range(layers):
      out = min(width * 4, max_width)
      convs.append(CausalConv1d(width, out, 41, stride=4, groups=max(width // 4, 1), rngs=rngs))
      width = out
    self.convs = nnx.List(convs)
    self.post = CausalConv1d(width, width, 5, rngs=rngs)
    self.head = CausalConv1d(width, 1, 3, rngs=rngs)

  def __call__(self, wave: jax.Array) -> tuple[jax.Array, Features]:  # [B, N]
    feats = []
    x = _lrelu(self.stem(wave[..., None]))
    feats.append(x)
    for conv in self.convs:
      x = _lrelu(conv(x))
      feats.append(x)
    x = _lrelu(self.post(x))
    feats.append(x)
    return self.head(x), feats


def avg_pool2(wave: jax.Array) -> jax.Array:
  """[B, N] -> [B, N // 2], mean of sample pairs."""
  n = wave.shape[-1] // 2 * 2
  return 0.5 * (wave[:, 0:n:2] + wave[:, 1:n:2])


class MultiScaleSTFTDiscriminator(nnx.Module):
  def __init__(self, cfg: SoundStreamConfig, *, rngs: nnx.Rngs):
    self.discs = nnx.List([STFTDiscriminator(n, cfg.stft_disc_channels, cfg.stft_disc_layers,
                                             rngs=rngs) for n in cfg.stft_disc_ffts])

  def __call__(self, wave: jax.Array) -> list[tuple[jax.Array, Features]]:
    return [d(wave) for d in self.discs]


class MultiScaleWaveDiscriminator(nnx.Module):
  def __init__(self, cfg: SoundStreamConfig, *, rngs: nnx.Rngs):
    self.discs = nnx.List([WaveDiscriminator(cfg.wave_disc_channels, cfg.wave_disc_layers,
                                             max_width=cfg.wave_disc_max_width, rngs=rngs)
                           for _ in range(cfg.wave_disc_scales)])

  def __call__(self, wave: jax.Array) -> list[tuple[jax.Array, Features]]:
    out = []
    for i, d in enumerate(self.discs):
      if i:
        wave = avg_pool2(wave)
      out.append(d(wave))
    return out
