"""MAGVIT-v2 tokenizer hyperparameters (frozen dataclass) and the named presets.

One config describes the tokenizer (encoder, LFQ, decoder), the discriminator and the loss weights,
so a trainer workdir's `magvit_config.json` is enough to rebuild the model for inference.

Presets:
- `paper`: the MAGVIT-v2 video tokenizer as used by VideoPoet (arXiv 2310.05737 appendix: 128 base
  filters, channel multipliers (1, 2, 2, 4), 4 residual blocks per level, temporal downsampling in
  the last two of the three downsampling stages, 18-bit LFQ). Checked with `jax.eval_shape` only.
- `paper_image`: the same with 1-frame temporal kernels (the 2D image model that is inflated).
- `small`: the same layout at 1/4 width and 1 residual block: the measured CPU recipe
  (docs/magvit.md); the demo uses `tiny` widths with 10-bit codes.
- `small_image`: its 2D image model.
- `tiny`: the smallest configuration with the full 8x spatial / 4x temporal compression, for tests.
"""
from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp

from vp_jax.config.json_file import lists_to_tuples

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The values `MagvitConfig.temporal_subframe_init` takes (inflation.tie_temporal_subframes).
TEMPORAL_SUBFRAME_INITS = ("repeat", "blend")


@dataclasses.dataclass(frozen=True)
class PerceptualConfig:
  """LPIPS-VGG16-style perceptual network (torchvision VGG16 features + LPIPS linear heads).

  `widths` / `convs_per_block` give the VGG layout ((64, 128, 256, 512, 512), (2, 2, 3, 3, 3) is
  VGG16). `vgg_weights` / `lpips_weights`: paths to the public checkpoints (torchvision
  `vgg16-397923af.pth`, LPIPS `vgg.pth`, or `.npz` files with the same keys); without them the
  network is randomly initialized and the perceptual loss is only a feature-matching regularizer.
  """
  widths: tuple[int, ...] = (64, 128, 256, 512, 512)
  convs_per_block: tuple[int, ...] = (2, 2, 3, 3, 3)
  vgg_weights: str | None = None
  lpips_weights: str | None = None


@dataclasses.dataclass(frozen=True)
class MagvitConfig:
  # Tokenizer
  filters: int = 128                                   # base width
  channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)  # one per resolution level
  num_res_blocks: int = 4                              # per level (encoder and decoder)
  # Decoder residual blocks per level (and in its middle stage) when they differ from the encoder's;
  # None: num_res_blocks. Extra decoder blocks over an image model start as identities at inflation
  # (inflation.grow_decoder_blocks).
  decoder_res_blocks: int | None = None
  temporal_downsample: tuple[bool, ...] = (False, True, True)  # per downsampling stage
  embedding_dim: int = 18                              # LFQ bits: 2^18 codes
  num_groups: int = 32                                 # group norm groups
  temporal_kernel: int = 3                             # 1: the 2D image model (inflatable)
  adaptive_group_norm: bool = True                     # decoder AdaGN conditioned on the latent
  # Kernel of the conv before each depth-to-space upsampling: 3 (3x3x3, how we read MAGVIT-v2's
  # "conv + depth-to-space" decoder, as the open reproductions also do) or 1 (1x1x1, what
  # magvit2-pytorch uses: about half the decoder's FLOPs; benchmarks/video_tokenizer.py times both).
  upsample_kernel: int = 3
  dtype: str = "float32"                               # activation dtype
  # LFQ
  entropy_groups: int = 2            # codebook entropy factorized over this many bit groups
  lfq_inv_temperature: float = 100.0
  commitment_weight: float = 0.25
  entropy_weight: float = 0.1
  diversity_gamma: float = 1.0
  # Losses
  recon_weight: float = 1.0          # MSE on [-1, 1] pixels
  perceptual_weight: float = 0.1
  perceptual: PerceptualConfig | None = PerceptualConfig()
  gan_weight: float = 0.1            # generator hinge loss, once the discriminator is active
  lecam_weight: float = 0.001
  lecam_ema_decay: float = 0.999
  disc_start_step: int = 20_000      # discriminator warm-up: no GAN terms before this many steps
  disc_filters: int = 64
  disc_channel_multipliers: tuple[int, ...] = (2, 4, 4, 4, 4)
  # Learning-rate multiplier of the earlier temporal taps of every tokenizer 3D kernel (the slices
  # inflation starts at zero; the last, current-frame slice keeps the base rate). With Adam a
  # zero-initialized weight moves by about the learning rate per step, and at the video stage's
  # fine-tuning rate the taps that carry motion stay near zero; 5x did not help (0.46 dB worse on
  # the small preset: docs/magvit_experiments.md, stop 21), so the recipe keeps 1.
  temporal_tap_lr_multiplier: float = 1.0
  # How inflation fills the earlier sub-frames of each temporal depth-to-space upsampling, channels
  # the image model never trains (inflation.tie_temporal_subframes): "repeat" copies the last
  # sub-frame's (a chunk starts as its last frame repeated); "blend" makes the in-between sub-frame
  # the mean of the previous and the current frame's (a chunk starts as a feature-space linear
  # interpolation between consecutive latent frames). Both decode a static video as the image model.
  temporal_subframe_init: str = "repeat"

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.channel_multipliers) - 1)

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(bool(t) for t in self.temporal_downsample)

  @property
  def decoder_blocks(self) -> int:
    return self.num_res_blocks if self.decoder_res_blocks is None else self.decoder_res_blocks

  @property
  def codebook_size(self) -> int:
    return 2 ** self.embedding_dim

  def validate(self) -> None:
    if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
      raise ValueError(f"MagvitConfig.temporal_downsample has {len(self.temporal_downsample)} "
                       f"entries; needs one per downsampling stage "
                       f"({len(self.channel_multipliers) - 1}).")
    for m in self.channel_multipliers:
      if (self.filters * m) % self.num_groups:
        raise ValueError(f"MagvitConfig: width {self.filters * m} is not divisible by "
                         f"num_groups={self.num_groups}.")
    if self.embedding_dim % self.entropy_groups:
      raise ValueError(f"MagvitConfig.embedding_dim={self.embedding_dim} is not divisible by "
                       f"entropy_groups={self.entropy_groups}.")
    if self.embedding_dim // self.entropy_groups > 12:
      raise ValueError(f"MagvitConfig: {self.embedding_dim // self.entropy_groups} bits per entropy "
                       f"group materializes 2^{self.embedding_dim // self.entropy_groups} "
                       f"probabilities per position; use more entropy_groups.")
    if self.num_res_blocks < 1 or self.decoder_blocks < 1:
      raise ValueError(f"MagvitConfig: num_res_blocks={self.num_res_blocks}, decoder_res_blocks="
                       f"{self.decoder_res_blocks}; each needs at least 1 block per level.")
    if self.temporal_kernel not in (1, 3):
      raise ValueError(f"MagvitConfig.temporal_kernel={self.temporal_kernel}; use 3 (video) or 1 "
                       f"(image model).")
    if self.upsample_kernel not in (1, 3):
      raise ValueError(f"MagvitConfig.upsample_kernel={self.upsample_kernel}; use 3 (3x3x3) or 1 "
                       f"(1x1x1).")
    if not self.temporal_tap_lr_multiplier > 0:
      raise ValueError(f"MagvitConfig.temporal_tap_lr_multiplier="
                       f"{self.temporal_tap_lr_multiplier} must be positive.")
    if self.temporal_subframe_init not in TEMPORAL_SUBFRAME_INITS:
      raise ValueError(f"MagvitConfig.temporal_subframe_init={self.temporal_subframe_init!r}; use "
                       f"one of {TEMPORAL_SUBFRAME_INITS}.")
    if self.temporal_subframe_init == "blend" and self.upsample_kernel == 1:
      raise ValueError("MagvitConfig.temporal_subframe_init='blend' needs the upsampling conv's "
                       "temporal taps; upsample_kernel=1 has none (use 'repeat').")
    if self.dtype not in DTYPES:
      raise ValueError(f"MagvitConfig.dtype={self.dtype!r}; known: {sorted(DTYPES)}.")

  def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
    """(T', H', W') for T x H x W frames; raises naming the bad dimension."""
    f, s = self.temporal_factor, self.spatial_factor
    if t < 1 or (t - 1) % f:
      raise ValueError(f"frames: T={t} frames; the tokenizer needs T = 1 or 1 + {f}k (the first "
                       f"frame alone, then {f}-frame chunks).")
    if h % s or w % s or h < s or w < s:
      raise ValueError(f"frames: H x W = {h} x {w}; both must be positive multiples of {s}.")
    return 1 + (t - 1) // f, h // s, w // s

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_json(cls, text: str) -> "MagvitConfig":
    return cls.from_dict(json.loads(text))

  @classmethod
  def from_dict(cls, raw: dict) -> "MagvitConfig":
    """The inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
    d = lists_to_tuples(raw)
    if d.get("perceptual") is not None:
      d["perceptual"] = PerceptualConfig(**lists_to_tuples(d["perceptual"]))
    return cls(**d)


_PAPER = MagvitConfig()
_SMALL = MagvitConfig(filters=32, channel_multipliers=(1, 2, 2, 4), num_res_blocks=1, num_groups=8,
                      perceptual=None, perceptual_weight=0.0,
                      disc_filters=16, disc_channel_multipliers=(2, 4, 4), disc_start_step=2000,
                      # Entropy weight 0.02, not the paper's 0.1: at this width and batch (8 images,
                      # 512 positions) 0.1 costs reconstruction (held-out image PSNR after 500 steps:
                      # 0.1 -> 21.2 dB, 0.02 -> 22.9, 0.005 -> 22.5 with 212 codes, 0 -> collapse to
                      # 7 codes at 16.6 dB); docs/magvit.md "Recipe".
                      lfq_inv_temperature=10.0, entropy_weight=0.02)
# tiny keeps the paper's entropy weight 0.1: on the demo's tokenizer (tiny widths, 10-bit codes,
# 32x32) 0.02 collapsed usage to 39 codes (docs/demo.md).
_TINY = dataclasses.replace(_SMALL, filters=8, num_groups=4, channel_multipliers=(1, 1, 2, 2),
                            disc_filters=8, disc_channel_multipliers=(1, 2), entropy_weight=0.1)

PRESETS = {
    "paper": _PAPER,
    "paper_image": dataclasses.replace(_PAPER, temporal_kernel=1),
    "small": _SMALL,
    "small_image": dataclasses.replace(_SMALL, temporal_kernel=1),
    "tiny": _TINY,
    "tiny_image": dataclasses.replace(_TINY, temporal_kernel=1),
}


def preset(name: str, **overrides) -> MagvitConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown MAGVIT preset {name!r}; known: {sorted(PRESETS)}.")
  cfg = dataclasses.replace(PRESETS[name], **overrides)
  cfg.validate()
  return cfg
