"""The trainable SoundStream: SEANet encoder -> residual VQ -> SEANet decoder, plus the STFT and
waveform discriminators, as one NNX module for the shared trainer.

Two optimizer groups, updated in this order every step: "generator" (encoder + decoder; the
codebooks follow by EMA inside its loss) and "discriminator" (both discriminators, on the
reconstruction of the just-updated generator). Generator loss (SoundStream section 3.5):

    reconstruction_weight * multi-scale mel loss + commitment_weight * commitment
    + [after adversarial_start_step generator steps]
      adversarial_weight * hinge_G + feature_weight * feature matching.

Discriminator loss: hinge over all sub-discriminators. batch = {"wave": float32 [B, N]} in [-1, 1]
at 16 kHz, N a multiple of hop_length (a trailing partial frame is cut).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models import registry
from vp_jax.models.soundstream import losses, spectral
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.discriminators import (MultiScaleSTFTDiscriminator,
                                                      MultiScaleWaveDiscriminator)
from vp_jax.models.soundstream.rvq import ResidualVQ, RVQOutput
from vp_jax.models.soundstream.seanet import Decoder, Encoder


class StepCounter(nnx.Variable):
  """Generator steps taken (gates the adversarial losses); carried in the train state."""


class SoundStream(nnx.Module):
  """SoundStream for the shared Trainer: SEANet encoder, residual VQ, decoder (generator group)
  and the STFT and waveform discriminators (discriminator group)."""

  def __init__(self, cfg: SoundStreamConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.quantizer = ResidualVQ(
        cfg.num_levels, cfg.codebook_size, cfg.embed_dim, decay=cfg.ema_decay, eps=cfg.ema_eps,
        dead_code_threshold=cfg.dead_code_threshold, kmeans_iters=cfg.kmeans_iters,
        quantizer_dropout=cfg.quantizer_dropout, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
    self.stft_disc = MultiScaleSTFTDiscriminator(cfg, rngs=rngs)
    self.wave_disc = MultiScaleWaveDiscriminator(cfg, rngs=rngs)
    self.generator_steps = StepCounter(jnp.zeros((), jnp.int32))

  def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
    return {"generator": ("encoder", "decoder"), "discriminator": ("stft_disc", "wave_disc")}

  # --- codec -------------------------------------------------------------------------------------
  def _trim(self, wave: jax.Array) -> jax.Array:
    n = self.cfg.num_frames(wave.shape[-1]) * self.cfg.hop_length
    if n == 0:
      raise ValueError(f"SoundStream: {wave.shape[-1]} samples is shorter than one frame "
                       f"({self.cfg.hop_length} samples).")
    return wave[..., :n]

  def encode(self, wave: jax.Array, num_levels: int | None = None) -> jax.Array:
    """wave [B, N] -> codes int32 [B, L, N // hop]."""
    return self.quantizer(self.encoder(self._trim(wave)), num_levels=num_levels).codes

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes [B, L', T] (the first L' <= L levels) -> wave [B, T * hop]."""
    return self.decoder(self.quantizer.dequantize(codes))

  def reconstruct(self, wave: jax.Array, *, train: bool = False, update: bool = False,
                  key: jax.Array | None = None) -> tuple[jax.Array, RVQOutput]:
    """wave [B, N] -> (reconstruction [B, N // hop * hop], quantizer output)."""
    rvq = self.quantizer(self.encoder(self._trim(wave)), train=train, update=update, key=key)
    return self.decoder(rvq.quantized), rvq

  def discriminate(self, wave: jax.Array) -> list[tuple[jax.Array, list[jax.Array]]]:
    """wave [B, N] -> one (logits, feature maps) per sub-discriminator: the STFT discriminators
    (one per window) first, then the waveform discriminator's scales."""
    return self.stft_disc(wave) + self.wave_disc(wave)

  # --- training ----------------------------------------------------------------------------------
  def loss(self, batch: dict[str, jax.Array], *, key: jax.Array, train: bool,
           group: str) -> tuple[jax.Array, dict[str, Any]]:
    cfg = self.cfg
    wave = self._trim(batch["wave"].astype(jnp.float32))
    adversarial = cfg.adversarial_weight > 0 or cfg.feature_weight > 0
    # Before adversarial_start_step generator steps the discriminators are not run at all (a
    # lax.cond: both branches are compiled, only the taken one executes), so the reconstruction
    # warm-up costs only the codec; the discriminator group's loss is 0 then (no update).
    on = self.generator_steps[...] >= cfg.adversarial_start_step
    if group == "discriminator":
      if not adversarial:
        return jnp.zeros((), jnp.float32), {}
      recon, _ = self.reconstruct(wave, train=train, update=False, key=key)
      recon = jax.lax.stop_gradient(recon)

      def disc_terms(wave, recon):
        real, fake = self.discriminate(wave), self.discriminate(recon)
        return (losses.hinge_discriminator(real, fake),
                jnp.mean(jnp.stack([jnp.mean(r) for r, _ in real])),
                jnp.mean(jnp.stack([jnp.mean(f) for f, _ in fake])))

      zeros = lambda wave, recon: (jnp.zeros(()),) * 3
      loss, real_logit, fake_logit = jax.lax.cond(on, disc_terms, zeros, wave, recon)
      return loss, {"real_logit": real_logit, "fake_logit": fake_logit}
    if group != "generator":
      raise ValueError(f"SoundStream.loss: unknown optimizer group {group!r}.")
    recon, rvq = self.reconstruct(wave, train=train, update=train, key=key)
    mel = spectral.multiscale_mel_loss(wave, recon, cfg.mel_windows, cfg.num_mels,
                                       cfg.sample_rate)
    loss = cfg.reconstruction_weight * mel + cfg.commitment_weight * rvq.commitment
    metrics = {"mel_loss": mel, "commitment": rvq.commitment,
               "snr_db": jnp.mean(spectral.snr_db(wave, recon)),
               "log_mel_distance": jnp.mean(spectral.log_mel_distance(wave, recon,
                                                                      cfg.sample_rate)),
               **rvq.metrics}
    if adversarial:
      def gen_terms(wave, recon):
        real, fake = self.discriminate(wave), self.discriminate(recon)
        return losses.hinge_generator(fake), losses.feature_matching(real, fake)

      zeros = lambda wave, recon: (jnp.zeros(()), jnp.zeros(()))
      adv, feat = jax.lax.cond(on, gen_terms, zeros, wave, recon)
      loss = loss + cfg.adversarial_weight * adv + cfg.feature_weight * feat
      metrics.update(adversarial=adv, feature_matching=feat,
                     adversarial_on=on.astype(jnp.float32))
    if train:
      self.generator_steps[...] = self.generator_steps[...] + 1
    return loss, metrics


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: SoundStreamConfig):
  with nnx.use_eager_sharding(False):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: SoundStream(cfg, rngs=nnx.Rngs(0))))
  return graphdef, jax.jit(lambda key: nnx.split(SoundStream(cfg, rngs=nnx.Rngs(key)))[1])


def init_model(cfg: SoundStreamConfig, seed: int = 0) -> SoundStream:
  """A freshly initialized SoundStream outside any mesh (parameters not eagerly sharded); the
  initializers run as one jitted program, compiled once per config (op-by-op eager init compiles
  every shape separately)."""
  graphdef, init = _jitted_init(cfg)
  with nnx.use_eager_sharding(False):
    state = init(jax.random.key_data(jax.random.key(seed)))
  return nnx.merge(graphdef, state)


registry.register(SoundStreamConfig, SoundStream)
