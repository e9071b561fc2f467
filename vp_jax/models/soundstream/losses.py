"""GAN losses of SoundStream (section 3.5): hinge adversarial losses and relative feature matching.

Each takes the per-sub-discriminator outputs `[(logits, features), ...]` of the discriminators.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def hinge_discriminator(real, fake) -> jax.Array:
  """mean_k [ mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(G(x)))) ]."""
  terms = [jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
           for (r, _), (f, _) in zip(real, fake)]
  return jnp.mean(jnp.stack(terms))


def hinge_generator(fake) -> jax.Array:
  """mean_k mean(relu(1 - D_k(G(x))))."""
  return jnp.mean(jnp.stack([jnp.mean(jax.nn.relu(1.0 - f)) for f, _ in fake]))


def feature_matching(real, fake) -> jax.Array:
  """mean over sub-discriminators k and layers l of |D_k^l(x) - D_k^l(G(x))|_1 / mean|D_k^l(x)|;
  the real features are constants (no gradient into the discriminator)."""
  terms = []
  for (_, real_feats), (_, fake_feats) in zip(real, fake):
    for r, f in zip(real_feats, fake_feats):
      r = jax.lax.stop_gradient(r)
      terms.append(jnp.mean(jnp.abs(r - f)) / (jnp.mean(jnp.abs(r)) + 1e-6))
  return jnp.mean(jnp.stack(terms))
