"""The trainable MAGVIT-v2 model for the shared Trainer: tokenizer (generator) + discriminator.

`optimizer_groups()` = {"generator": ("tokenizer",), "discriminator": ("discriminator",)}; the
trainer updates the generator, then the discriminator on the updated generator, each with its own
optimizer. Batches carry `video`: uint8 [B, T, H, W, 3] (or float in [0, 1]); the model works in
[-1, 1].

Generator loss = recon_weight * MSE + perceptual_weight * LPIPS + commitment_weight * commitment
  + entropy_weight * (per-sample entropy - gamma * codebook entropy)
  + [step >= disc_start_step] * gan_weight * hinge generator loss.
Discriminator loss = [step >= disc_start_step] * (hinge + lecam_weight * LeCAM).
Before `disc_start_step` (the discriminator warm-up) the GAN branches are skipped with `lax.cond`,
so they cost no compute. `step` counts discriminator-group evaluations in training (= train steps,
or micro-batches under gradient accumulation); it and the LeCAM EMAs are model variables carried in
the train state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models import registry
from vp_jax.models.magvit import lfq, losses
from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.discriminator import Discriminator
from vp_jax.models.magvit.perceptual import LPIPS
from vp_jax.models.magvit.tokenizer import MagvitTokenizer


class Counter(nnx.Variable):
  """Training-progress counters and statistics (not optimized)."""


def to_model_range(video: jax.Array) -> jax.Array:
  """uint8 [0, 255] or float [0, 1] -> float32 [-1, 1]."""
  if video.dtype == jnp.uint8:
    return video.astype(jnp.float32) / 127.5 - 1.0
  return video.astype(jnp.float32) * 2.0 - 1.0


class MagvitModel(nnx.Module):
  """The tokenizer's training model for the shared Trainer: the tokenizer (generator group), the 3D
  discriminator (discriminator group), optional LPIPS, and the step and LeCAM EMA counters."""

  def __init__(self, cfg: MagvitConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.tokenizer = MagvitTokenizer(cfg, rngs=rngs)
    self.discriminator = Discriminator(cfg.disc_filters, cfg.disc_channel_multipliers, rngs=rngs)
    self.perceptual = (LPIPS(cfg.perceptual, rngs=rngs)
                       if cfg.perceptual is not None and cfg.perceptual_weight > 0 else None)
    self.step = Counter(jnp.zeros((), jnp.int32))
    self.ema_real = Counter(jnp.zeros((), jnp.float32))
    self.ema_fake = Counter(jnp.zeros((), jnp.float32))

  def optimizer_groups(self):
    return {"generator": ("tokenizer",), "discriminator": ("discriminator",)}

  def gan_active(self) -> jax.Array:
    return self.step[...] >= self.cfg.disc_start_step

  def loss(self, batch, *, key, train: bool, group: str):
    del key
    x = to_model_range(batch["video"])                               # [B, T, H, W, 3]
    if group == "generator":
      return self._generator_loss(x)
    if group == "discriminator":
      return self._discriminator_loss(x, train)
    raise ValueError(f"MagvitModel.loss: unknown group {group!r}.")

  def _generator_loss(self, x):
    cfg = self.cfg
    recon, q = self.tokenizer(x)
    mse = jnp.mean(jnp.square(recon.astype(jnp.float32) - x))
    loss = cfg.recon_weight * mse + cfg.commitment_weight * q.commitment \
        + cfg.entropy_weight * q.entropy_loss
    metrics = {"recon_mse": mse, "psnr": losses.psnr(recon, x), "commitment": q.commitment,
               "per_sample_entropy": q.per_sample_entropy,
               "codebook_entropy": q.codebook_entropy}
    if self.perceptual is not None:
      b, t, h, w, c = x.shape
      perc = jnp.mean(self.perceptual(recon.reshape(b * t, h, w, c), x.reshape(b * t, h, w, c)))
      loss = loss + cfg.perceptual_weight * perc
      metrics["perceptual"] = perc
    if cfg.gan_weight > 0:
      disc_graph, disc_state = nnx.split(self.discriminator)

      def gan(recon_):
        return losses.hinge_g_loss(nnx.merge(disc_graph, disc_state)(recon_))

      g = jax.lax.cond(self.gan_active(), gan, lambda r: jnp.zeros((), jnp.float32), recon)
      loss = loss + cfg.gan_weight * g
      metrics["gan_g"] = g
    metrics.update(lfq.usage_metrics(q.ids, cfg.embedding_dim, cfg.entropy_groups))
    return loss, metrics

  def _discriminator_loss(self, x, train: bool):
    cfg = self.cfg
    active = self.gan_active()
    disc_graph, disc_state = nnx.split(self.discriminator)
    tok_graph, tok_state = nnx.split(self.tokenizer)
    ema_real, ema_fake = self.ema_real[...], self.ema_fake[...]

    def run(x_):
      recon = jax.lax.stop_gradient(nnx.merge(tok_graph, tok_state)(x_)[0])
      disc = nnx.merge(disc_graph, disc_state)
      real, fake = disc(x_), disc(recon)
      hinge = losses.hinge_d_loss(real, fake)
      lecam = losses.lecam_loss(real, fake, ema_real, ema_fake)
      return hinge, lecam, jnp.mean(real), jnp.mean(fake)

    def skip(x_):
      z = jnp.zeros((), jnp.float32)
      return z, z, ema_real, ema_fake

    hinge, lecam, real_mean, fake_mean = jax.lax.cond(active, run, skip, x)
    loss = hinge + cfg.lecam_weight * lecam
    if train:
      d = cfg.lecam_ema_decay
      self.ema_real[...] = jnp.where(active, d * ema_real + (1 - d) * real_mean, ema_real)
      self.ema_fake[...] = jnp.where(active, d * ema_fake + (1 - d) * fake_mean, ema_fake)
      self.step[...] = self.step[...] + 1
    return loss, {"hinge": hinge, "lecam": lecam, "logits_real": real_mean,
                  "logits_fake": fake_mean, "active": active.astype(jnp.float32)}


registry.register(MagvitConfig, MagvitModel)
