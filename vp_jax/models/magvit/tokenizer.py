"""The MAGVIT-v2 tokenizer network: encoder -> LFQ -> decoder, on [-1, 1] pixels.

This is what inference needs (the `VideoTokenizer` API wraps it); the trainable GAN model holds it
as its generator. Pixel-range conversion and input checking live in the public API, not here.
"""
from __future__ import annotations

import jax
from flax import nnx

from vp_jax.models.magvit import lfq
from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.decoder import Decoder
from vp_jax.models.magvit.encoder import Encoder


class MagvitTokenizer(nnx.Module):
  """MAGVIT-v2's autoencoder: causal 3D CNN encoder, LFQ, decoder. Works in [-1, 1] pixels;
  `VideoTokenizer` is the checked, jitted API over it."""

  def __init__(self, cfg: MagvitConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def quantize(self, z: jax.Array) -> lfq.LFQOutput:
    cfg = self.cfg
    return lfq.quantize(z, inv_temperature=cfg.lfq_inv_temperature, groups=cfg.entropy_groups,
                        diversity_gamma=cfg.diversity_gamma)

  def encode(self, x: jax.Array) -> jax.Array:
    """[B, T, H, W, 3] in [-1, 1] -> int32 ids [B, T', H', W']."""
    return lfq.bits_to_ids(self.encoder(x) > 0)

  def decode(self, ids: jax.Array) -> jax.Array:
    """int ids [B, T', H', W'] -> [B, T, H, W, 3] (about [-1, 1], not clipped)."""
    return self.decoder(lfq.ids_to_codes(ids, self.cfg.embedding_dim))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, lfq.LFQOutput]:
    """Reconstruction with straight-through gradients: [B, T, H, W, 3] -> (same, LFQ output)."""
    out = self.quantize(self.encoder(x))
    return self.decoder(out.quantized), out


def create_tokenizer(cfg: MagvitConfig, seed: int = 0) -> MagvitTokenizer:
  """A randomly initialized tokenizer outside any mesh (the logical-axis metadata is kept, but no
  sharding is applied at creation)."""
  with nnx.use_eager_sharding(False):
    return nnx.jit(lambda: MagvitTokenizer(cfg, rngs=nnx.Rngs(seed)))()
