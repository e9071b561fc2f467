"""MAGVIT-v2's GAN losses (hinge, LeCAM), PSNR, input range, the 3D discriminator, and how
MagvitModel composes its generator and discriminator losses from them (model.py's docstring)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit import losses, preset
from vp_jax.models.magvit.discriminator import Discriminator, avg_pool
from vp_jax.models.magvit.model import MagvitModel, to_model_range


def _build(make):
  """A module built outside any mesh (logical-axis metadata kept, no sharding applied)."""
  with nnx.use_eager_sharding(False):
    return nnx.jit(make)()


def test_hinge_losses_on_hand_values():
  real = jnp.array([2.0, 0.5, -1.0])
  fake = jnp.array([-2.0, 0.0, 1.0])
  # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1.
  assert float(losses.hinge_d_loss(real, fake)) == pytest.approx(5 / 6 + 1.0)
  assert float(losses.hinge_g_loss(fake)) == pytest.approx(1 / 3)


def test_lecam_on_hand_values():
  real, fake = jnp.array([1.0, -1.0]), jnp.array([0.0, 2.0])
  # relu(real - ema_fake) = [1.5, 0] -> mean square 1.125; relu(ema_real - fake) = [0.5, 0] -> 0.125.
  got = losses.lecam_loss(real, fake, ema_real=jnp.float32(0.5), ema_fake=jnp.float32(-0.5))
  assert float(got) == pytest.approx(1.25)
  # Predictions on the right side of the other class's average cost nothing.
  assert float(losses.lecam_loss(real - 5, fake + 5, jnp.float32(0.5), jnp.float32(-0.5))) == 0.0


def test_psnr():
  x = jnp.zeros((2, 3, 4, 4, 3))
  y = x.at[0].set(0.2).at[1].set(0.02)
  # [-1, 1] range (peak-to-peak 2): mse 0.04 -> 20 dB, mse 4e-4 -> 40 dB; the batch mean is 30.
  assert float(losses.psnr(x, y)) == pytest.approx(30.0, abs=1e-4)
  assert float(losses.psnr(x[:1], y[:1], value_range=1.0)) == pytest.approx(10 * np.log10(25), abs=1e-4)


def test_to_model_range():
  np.testing.assert_allclose(np.asarray(to_model_range(jnp.array([0, 255], jnp.uint8))), [-1, 1])
  np.testing.assert_allclose(np.asarray(to_model_range(jnp.array([0.0, 0.25, 1.0]))),
                             [-1, -0.5, 1])


def _numpy_avg_pool(x):
  b, t, h, w, c = x.shape
  ft = 2 if t > 1 else 1
  x = np.pad(x, [(0, 0), (0, (-t) % ft), (0, h % 2), (0, w % 2), (0, 0)], mode="edge")
  out = np.zeros((b, x.shape[1] // ft, x.shape[2] // 2, x.shape[3] // 2, c))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      for k in range(out.shape[3]):
        out[:, i, j, k] = x[:, i * ft:(i + 1) * ft, 2 * j:2 * j + 2, 2 * k:2 * k + 2].mean(axis=(1, 2, 3))
  return out


@pytest.mark.parametrize("thw,expected", [((5, 6, 7), (3, 3, 4)), ((1, 4, 4), (1, 2, 2)),
                                          ((2, 3, 2), (1, 2, 1))])
def test_avg_pool(thw, expected):
  x = np.random.default_rng(0).normal(size=(2, *thw, 3)).astype(np.float32)
  got = np.asarray(avg_pool(jnp.asarray(x)))
  assert got.shape == (2, *expected, 3)
  np.testing.assert_allclose(got, _numpy_avg_pool(x), rtol=1e-6, atol=1e-6)


def test_discriminator_one_logit_per_clip_without_batch_mixing():
  disc = _build(lambda: Discriminator(8, (1, 2), rngs=nnx.Rngs(0)))
  x = jax.random.uniform(jax.random.key(1), (3, 5, 16, 16, 3), minval=-1, maxval=1)
  logits = np.asarray(disc(x))
  assert logits.shape == (3,) and np.all(np.isfinite(logits))
  assert len(np.unique(np.round(logits, 6))) == 3   # different clips, different logits
  np.testing.assert_allclose(np.asarray(disc(x[::-1])), logits[::-1], rtol=1e-5, atol=1e-6)
  # It judges whole clips (not causal): the last frame changes the logit.
  assert not np.allclose(np.asarray(disc(x.at[:, -1].set(0.0))), logits)
  # Images (T = 1) go through the same network.
  assert np.asarray(disc(x[:, :1])).shape == (3,)


@pytest.fixture(scope="module")
def model_and_batch():
  cfg = dataclasses.replace(preset("tiny"), disc_start_step=0, gan_weight=0.5, lecam_weight=0.3,
                            lecam_ema_decay=0.9)
  model = _build(lambda: MagvitModel(cfg, rngs=nnx.Rngs(0)))
  video = np.random.default_rng(3).integers(0, 256, (2, 5, 16, 16, 3), dtype=np.uint8)
  return model, {"video": jnp.asarray(video)}


def test_generator_loss_is_the_documented_sum(model_and_batch):
  model, batch = model_and_batch
  cfg = model.cfg
  loss, m = model.loss(batch, key=None, train=True, group="generator")
  x = to_model_range(batch["video"])
  recon, q = model.tokenizer(x)
  np.testing.assert_allclose(float(m["recon_mse"]), float(jnp.mean((recon - x) ** 2)), rtol=1e-5)
  gan = losses.hinge_g_loss(model.discriminator(recon))
  np.testing.assert_allclose(float(m["gan_g"]), float(gan), rtol=1e-5, atol=1e-6)
  entropy = m["per_sample_entropy"] - cfg.diversity_gamma * m["codebook_entropy"]
  np.testing.assert_allclose(float(entropy), float(q.entropy_loss), rtol=1e-5, atol=1e-6)
  expected = (cfg.recon_weight * m["recon_mse"] + cfg.commitment_weight * m["commitment"]
              + cfg.entropy_weight * entropy + cfg.gan_weight * gan)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5, atol=1e-6)
  # Before the warm-up ends the GAN term is exactly absent.
  late = _build(lambda: MagvitModel(dataclasses.replace(cfg, disc_start_step=10),
                                    rngs=nnx.Rngs(0)))
  loss_late, m_late = late.loss(batch, key=None, train=True, group="generator")
  assert float(m_late["gan_g"]) == 0.0
  np.testing.assert_allclose(float(loss_late), float(loss - cfg.gan_weight * gan), rtol=1e-5,
                             atol=1e-6)


def test_discriminator_loss_and_lecam_statistics(model_and_batch):
  _, batch = model_and_batch
  cfg = model_and_batch[0].cfg
  model = _build(lambda: MagvitModel(cfg, rngs=nnx.Rngs(0)))   # fresh counters
  x = to_model_range(batch["video"])
  real = model.discriminator(x)
  fake = model.discriminator(model.tokenizer(x)[0])
  loss, m = model.loss(batch, key=None, train=True, group="discriminator")
  # First step: the EMAs were 0 when LeCAM was computed.
  expected = (losses.hinge_d_loss(real, fake)
              + cfg.lecam_weight * losses.lecam_loss(real, fake, jnp.float32(0), jnp.float32(0)))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5, atol=1e-6)
  d = cfg.lecam_ema_decay
  np.testing.assert_allclose(float(model.ema_real[...]), (1 - d) * float(jnp.mean(real)), rtol=1e-5)
  np.testing.assert_allclose(float(model.ema_fake[...]), (1 - d) * float(jnp.mean(fake)), rtol=1e-5)
  assert int(model.step[...]) == 1 and float(m["active"]) == 1.0
  # An evaluation call (train=False) leaves the counters alone.
  model.loss(batch, key=None, train=False, group="discriminator")
  assert int(model.step[...]) == 1
  with pytest.raises(ValueError, match="unknown group 'critic'"):
    model.loss(batch, key=None, train=True, group="critic")


def test_gan_active_switches_at_disc_start_step(model_and_batch):
  """gan_active is step >= disc_start_step, the step being the discriminator's update counter."""
  cfg = dataclasses.replace(model_and_batch[0].cfg, disc_start_step=2)
  model = _build(lambda: MagvitModel(cfg, rngs=nnx.Rngs(0)))
  seen = []
  for step in range(4):
    model.step[...] = jnp.int32(step)
    seen.append(bool(model.gan_active()))
  assert seen == [False, False, True, True]
