"""GAN losses for the tokenizer: hinge losses and LeCAM regularization.

LeCAM (Tseng et al. 2021, used by MAGVIT/MAGVIT-v2) keeps the discriminator's predictions near the
moving averages of its own past predictions on the other class:
R = E[relu(D(real) - ema_fake)^2] + E[relu(ema_real - D(fake))^2].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
  return -jnp.mean(fake_logits)


def lecam_loss(real_logits: jax.Array, fake_logits: jax.Array, ema_real: jax.Array,
               ema_fake: jax.Array) -> jax.Array:
  return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake_logits))))


def psnr(x: jax.Array, y: jax.Array, value_range: float = 2.0) -> jax.Array:
  """Mean over the batch of per-example PSNR in dB (axis 0 = batch)."""
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)),
                 axis=tuple(range(1, x.ndim)))
  return jnp.mean(10.0 * jnp.log10(value_range ** 2 / jnp.maximum(mse, 1e-10)))
