"""SoundStream hyperparameters as a frozen dataclass with named presets, and the frame-count rule.

Frame rule: the encoder's strided convolutions are causal (left padding only), so each one maps
n samples to floor(n / stride) frames and the whole encoder maps N samples to
`T = N // hop_length` frames (hop_length = prod(strides) = 320 at 16 kHz, 50 frames/s). A trailing
partial frame (N % 320 samples, 80 of the 34,000 of a 2.125 s clip) is not encoded: 2.125 s ->
34,000 // 320 = 106 frames, and decoding 106 frames gives 106 * 320 = 33,920 samples.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
  sample_rate: int = 16_000
  # SEANet codec.
  channels: int = 32                               # C: width of the first conv
  channel_mults: tuple[int, ...] = (2, 4, 8, 16)   # block widths C*m (encoder; mirrored in decoder)
  strides: tuple[int, ...] = (2, 4, 5, 8)          # product = hop_length
  dilations: tuple[int, ...] = (1, 3, 9)           # residual units per block
  residual_kernel: int = 7
  embed_dim: int = 512                             # D: latent / codebook dimension
  # Residual VQ.
  num_levels: int = 4
  codebook_size: int = 1024
  ema_decay: float = 0.99
  ema_eps: float = 1e-5
  dead_code_threshold: float = 2.0     # codes whose EMA usage falls below are re-seeded from data
  kmeans_iters: int = 10               # k-means init on the first training batch (0: data samples)
  commitment_weight: float = 1.0
  quantizer_dropout: float = 1.0       # fraction of training examples with n_q ~ U{1..levels}
  # Discriminators.
  stft_disc_ffts: tuple[int, ...] = (2048, 1024, 512)   # multi-scale complex-STFT discriminator
  stft_disc_channels: int = 32
  stft_disc_layers: int = 4            # strided 2-D conv layers per STFT discriminator
  wave_disc_scales: int = 3            # MelGAN-style waveform discriminators (avg-pooled x2 each)
  wave_disc_channels: int = 16
  wave_disc_layers: int = 4            # grouped strided (x4) conv layers per waveform discriminator
  wave_disc_max_width: int = 1024
  # Losses (SoundStream section 3.5 weights).
  mel_windows: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # 2^6 .. 2^11
  num_mels: int = 64
  reconstruction_weight: float = 1.0
  adversarial_weight: float = 1.0
  feature_weight: float = 100.0
  adversarial_start_step: int = 0      # generator steps with reconstruction losses only

  @property
  def hop_length(self) -> int:
    return math.prod(self.strides)

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  def num_frames(self, num_samples: int) -> int:
    """Latent frames for `num_samples` samples: floor(num_samples / hop_length)."""
    if num_samples < 0:
      raise ValueError(f"num_samples={num_samples} must be >= 0.")
    return num_samples // self.hop_length

  def validate(self) -> None:
    if len(self.strides) != len(self.channel_mults):
      raise ValueError(f"SoundStreamConfig: {len(self.strides)} strides but "
                       f"{len(self.channel_mults)} channel_mults.")
    if self.num_levels < 1 or self.codebook_size < 2:
      raise ValueError(f"SoundStreamConfig: num_levels={self.num_levels} must be >= 1 and "
                       f"codebook_size={self.codebook_size} >= 2.")
    if not 0.0 <= self.quantizer_dropout <= 1.0:
      raise ValueError(f"SoundStreamConfig.quantizer_dropout={self.quantizer_dropout} must be in "
                       f"[0, 1].")
    if not 0.0 < self.ema_decay < 1.0:
      raise ValueError(f"SoundStreamConfig.ema_decay={self.ema_decay} must be in (0, 1).")


PRESETS = {
    # SoundStream / audiolm-pytorch widths: C=32, D=512, 4 x 1024 codes (VideoPoet's layout).
    "paper": SoundStreamConfig(),
    # The CPU preset: same strides and codebooks (106 frames x 4 x 1024), 4x narrower codec, light
    # discriminators. Trains on synthetic audio in minutes on a laptop CPU.
    "small": SoundStreamConfig(
        channels=8, embed_dim=64, stft_disc_ffts=(512, 256, 128), stft_disc_channels=8,
        stft_disc_layers=3, wave_disc_scales=2, wave_disc_channels=8, wave_disc_layers=3,
        wave_disc_max_width=128,
        mel_windows=(64, 128, 256, 512, 1024), kmeans_iters=5),
}


def preset(name: str, **overrides) -> SoundStreamConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown SoundStream preset {name!r}; known: {sorted(PRESETS)}.")
  cfg = dataclasses.replace(PRESETS[name], **overrides)
  cfg.validate()
  return cfg
