"""MAGVIT-v2 pieces named on their own: the Encoder's stages (widths, strides, order), a
discriminator DiscBlock against a direct numpy computation, the fields of LFQOutput and how they
relate, and HeldOutScore's summary line and JSON form."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit import lfq, preset
from vp_jax.models.magvit.discriminator import DiscBlock, avg_pool
from vp_jax.models.magvit.encoder import Encoder
from vp_jax.models.magvit.evaluate import HeldOutScore


def _build(make):
  """A module built outside any mesh (logical-axis metadata kept, no sharding applied)."""
  with nnx.use_eager_sharding(False):
    return make()


# ---------------------------------------------------------------- Encoder

def test_encoder_stages_widths_strides_and_order():
  """tiny: filters 8, multipliers (1, 1, 2, 2), 1 block per level, time halved at the 2nd and 3rd
  downsampling. Each stage's output shape is checked, and the stages run in the documented order
  (conv_in, per level blocks then downsampling, mid blocks, GN + swish, conv_out) give exactly
  what Encoder.__call__ gives."""
  cfg = preset("tiny")
  enc = _build(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
  assert len(enc.blocks) == 4 and len(enc.downs) == 3 and len(enc.mid) == 1
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 9, 16, 16, 3)), jnp.float32)

  h = enc.conv_in(x)
  assert h.shape == (2, 9, 16, 16, 8)
  shapes = []
  for level in range(4):
    h = enc.blocks[level](h)
    shapes.append(h.shape)
    if level < 3:
      h = enc.downs[level](h)
      shapes.append(h.shape)
  assert shapes == [
      (2, 9, 16, 16, 8), (2, 9, 8, 8, 8),       # level 0: width 8; space only
      (2, 9, 8, 8, 8), (2, 5, 4, 4, 8),         # level 1: width 8; 9 -> 5 frames
      (2, 5, 4, 4, 16), (2, 3, 2, 2, 16),       # level 2: width 16; 5 -> 3 frames
      (2, 3, 2, 2, 16)]                         # level 3: width 16, no downsampling
  h = enc.mid[0](h)
  want = enc.conv_out(jax.nn.swish(enc.norm_out(h)))
  got = enc(x)
  assert got.shape == (2, 3, 2, 2, 18)          # 1 + (9 - 1) / 4 latent frames, 18 bits
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  # The last conv is a 1x1x1 projection: zero its kernel and only its bias is left.
  enc.conv_out.kernel[...] = jnp.zeros_like(enc.conv_out.kernel[...])
  enc.conv_out.bias[...] = jnp.arange(18, dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(enc(x)),
                                np.broadcast_to(np.arange(18, dtype=np.float32), (2, 3, 2, 2, 18)))


# ---------------------------------------------------------------- DiscBlock

def _np_conv_same(x, kernel, bias):
  """[B, T, H, W, Ci] * [k, k, k, Ci, Co] with (k-1)//2 before and k//2 after on each axis."""
  k = kernel.shape[0]
  lo, hi = (k - 1) // 2, k // 2
  xp = np.pad(x, [(0, 0), (lo, hi), (lo, hi), (lo, hi), (0, 0)])
  b, t, h, w, _ = x.shape
  out = np.zeros((b, t, h, w, kernel.shape[-1]))
  for dt in range(k):
    for dy in range(k):
      for dx in range(k):
        out += xp[:, dt:dt + t, dy:dy + h, dx:dx + w] @ kernel[dt, dy, dx]
  return out + bias


def _np_avg_pool(x):
  """The discriminator's own pooling (checked against a loop in tests/test_magvit_losses.py)."""
  return np.asarray(avg_pool(jnp.asarray(x, jnp.float32)), np.float64)


def _lrelu(x):
  return np.where(x > 0, x, 0.2 * x)


@pytest.mark.parametrize("thw,out_thw", [((3, 4, 6), (2, 2, 3)), ((1, 4, 4), (1, 2, 2))])
def test_disc_block_matches_numpy(thw, out_thw):
  """(avg_pool(lrelu(conv2(lrelu(conv1 x)))) + skip(avg_pool x)) / sqrt 2, with 'same' 3x3x3
  convs and a 1x1x1 skip; time pooled only while T > 1."""
  block = _build(lambda: DiscBlock(2, 3, rngs=nnx.Rngs(4)))
  rng = np.random.default_rng(1)
  for conv in (block.conv1, block.conv2, block.skip):    # non-zero biases, so they are checked
    conv.bias[...] = jnp.asarray(rng.normal(size=conv.bias[...].shape), jnp.float32)
  x = rng.normal(size=(2, *thw, 2)).astype(np.float32)
  p = {name: (np.asarray(c.kernel[...], np.float64), np.asarray(c.bias[...], np.float64))
       for name, c in (("conv1", block.conv1), ("conv2", block.conv2), ("skip", block.skip))}
  h = _lrelu(_np_conv_same(x, *p["conv1"]))
  h = _np_avg_pool(_lrelu(_np_conv_same(h, *p["conv2"])))
  want = (h + _np_conv_same(_np_avg_pool(x), *p["skip"])) / math.sqrt(2.0)
  got = np.asarray(block(jnp.asarray(x)))
  assert got.shape == (2, *out_thw, 3)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- LFQOutput

def test_lfq_output_fields_relate_as_documented():
  z = jnp.asarray(np.random.default_rng(2).normal(0, 0.2, (3, 4, 6)), jnp.float32)
  out = lfq.quantize(z, inv_temperature=5.0, groups=2, diversity_gamma=0.5)
  assert isinstance(out, lfq.LFQOutput)
  assert [f.name for f in dataclasses.fields(out)] == [
      "quantized", "ids", "commitment", "per_sample_entropy", "codebook_entropy", "entropy_loss"]
  zn = np.asarray(z, np.float64)
  sign = np.where(zn > 0, 1.0, -1.0)
  assert out.quantized.shape == (3, 4, 6) and out.ids.shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(out.ids), ((zn > 0) * 2 ** np.arange(6)).sum(-1))
  np.testing.assert_allclose(float(out.commitment), np.mean((zn - sign) ** 2), rtol=1e-6)
  p = 1 / (1 + np.exp(-4 * 5.0 * zn))                            # p_i(+1 | z)
  h_bits = -(p * np.log(p) + (1 - p) * np.log(1 - p))
  np.testing.assert_allclose(float(out.per_sample_entropy), np.mean(h_bits.sum(-1)), rtol=1e-5)
  # Two groups of 3 bits: each group's 8-way marginal has at most ln 8 nats.
  assert 0 < float(out.codebook_entropy) <= 2 * math.log(8) + 1e-6
  np.testing.assert_allclose(float(out.entropy_loss),
                             float(out.per_sample_entropy) - 0.5 * float(out.codebook_entropy),
                             rtol=1e-6)


def test_lfq_output_entropies_agree_when_every_position_is_the_same():
  """If all positions share one z, the batch marginal of each bit group is that position's own
  distribution, and the bits are independent, so the codebook entropy equals the per-sample one
  and the entropy loss is (1 - gamma) x it."""
  z = jnp.broadcast_to(jnp.asarray([0.1, -0.05, 0.3, 0.0, -0.2, 0.02], jnp.float32), (5, 6))
  out = lfq.quantize(z, inv_temperature=2.0, groups=3, diversity_gamma=0.25)
  np.testing.assert_allclose(float(out.codebook_entropy), float(out.per_sample_entropy),
                             rtol=1e-5)
  np.testing.assert_allclose(float(out.entropy_loss), 0.75 * float(out.per_sample_entropy),
                             rtol=1e-5)


# ---------------------------------------------------------------- HeldOutScore

def _clip_score():
  return HeldOutScore(step=800, clips=32, psnr_db=25.341, block_psnr_db=(25.0, 25.682),
                      frame_psnr_db=(26.27, 24.91, 25.8, 25.1, 25.9),
                      distinct_codes=1234, positions=2560,
                      blend_frame_psnr_db=(26.27, 24.5, 24.61, 24.7, 25.9),
                      inbetween_token_change=0.206, inbetween_bit_change=0.3064)


def test_held_out_score_summary_for_clips():
  assert _clip_score().summary() == (
      "step 800: held-out PSNR 25.34 dB over 32 clips (blocks: 25.00 25.68; frame 0 26.27, "
      "frames 1-4 24.91-25.90 dB; frames 1-4 mean 25.43 dB, 24.93 with each chunk's in-between "
      "frames blended from its decoded ends; in-between frames set to the blend of true chunk "
      "ends change 20.6 % of chunk tokens (0.306 bits per token)); 1234 distinct codes over "
      "2560 positions")


def test_held_out_score_summary_for_images_has_no_per_frame_part():
  score = HeldOutScore(step=None, clips=16, psnr_db=25.97, block_psnr_db=(25.97,),
                       frame_psnr_db=(25.97,), distinct_codes=300, positions=4096)
  assert score.summary() == ("step None: held-out PSNR 25.97 dB over 16 clips (blocks: 25.97); "
                             "300 distinct codes over 4096 positions")


def test_held_out_score_to_json_round_trips_through_json_text():
  score = _clip_score()
  raw = json.loads(json.dumps(score.to_json()))
  assert raw["psnr_db"] == 25.341 and raw["block_psnr_db"] == [25.0, 25.682]
  assert raw["inbetween_token_change"] == 0.206 and raw["step"] == 800
  back = HeldOutScore(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
  assert back == score
