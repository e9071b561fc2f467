"""Direct unit tests of the SoundStream building blocks, each against a numpy computation from the
module's own parameters: Conv2d (SAME-style padding), the SEANet ResidualUnit / EncoderBlock /
DecoderBlock / Encoder (values, exact output shapes, causality), the STFT and waveform
discriminators (their input transform, feature-map shapes, grouped convolutions), StepCounter
(counts generator training steps and gates the adversarial losses), CodebookState (EMA buffers
that gradients and optimizers never see) and RVQOutput (codes, sums, norms and commitment on a
vector built from codebook entries)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.conv import CausalConv1d, CausalConvTranspose1d, Conv2d
from vp_jax.models.soundstream.discriminators import STFTDiscriminator, WaveDiscriminator
from vp_jax.models.soundstream.model import StepCounter, init_model
from vp_jax.models.soundstream.rvq import CodebookState, ResidualVQ, RVQOutput
from vp_jax.models.soundstream.seanet import (DecoderBlock, Encoder, EncoderBlock,
                                              ResidualUnit)


@pytest.fixture(autouse=True)
def _lazy_sharding():
  """Modules built outside a mesh: no eager sharding of the annotated parameters."""
  with nnx.use_eager_sharding(False):
    yield


# Tiny SEANet: hop 2 * 3 = 6, widths 2 -> 4 -> 8, two residual units (dilations 1, 3) of kernel 3.
TINY = SoundStreamConfig(channels=2, channel_mults=(2, 4), strides=(2, 3), dilations=(1, 3),
                         residual_kernel=3, embed_dim=5)


# --- numpy references ---------------------------------------------------------------------------
def elu(x):
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def lrelu(x):
  return np.where(x > 0, x, 0.2 * x)


def params(conv):
  return np.asarray(conv.kernel[...], np.float64), np.asarray(conv.bias[...], np.float64)


def np_causal_conv(x, conv, *, stride=None, dilation=None, groups=None):
  """x [B, N, Cin] -> [B, N // S, Cout]: output t sums the K taps ending at sample (t + 1) S - 1,
  spaced by the dilation (samples before 0 are zero); grouped: output channel o reads only the
  input channels of its group."""
  w, b = params(conv)
  stride = conv.stride if stride is None else stride
  dilation = conv.dilation if dilation is None else dilation
  groups = conv.groups if groups is None else groups
  bsz, n, cin = x.shape
  k, cg, cout = w.shape
  og = cout // groups
  t = np.arange(n // stride)
  idx = (t[:, None] + 1) * stride - 1 - (k - 1 - np.arange(k))[None] * dilation   # [T, K]
  xp = np.concatenate([np.zeros((bsz, 1, cin)), x], 1)                             # 0: silence
  win = xp[:, np.where(idx >= 0, idx + 1, 0)]                                      # [B, T, K, Cin]
  out = np.zeros((bsz, len(t), cout))
  for g in range(groups):
    out[..., g * og:(g + 1) * og] = np.einsum(
        "btkc,kco->bto", win[..., g * cg:(g + 1) * cg], w[..., g * og:(g + 1) * og])
  return out + b


def np_conv_transpose(x, conv):
  """x [B, T, Cin] -> [B, T * S, Cout]: sample n = sum over i < m of frame n // S - i through tap
  i * S + n % S (frames before 0 contribute nothing; nothing is written past T * S)."""
  w, b = params(conv)
  s, m = conv.stride, conv.multiple
  bsz, t, _ = x.shape
  out = np.zeros((bsz, t * s, w.shape[-1]))
  for n in range(t * s):
    for i in range(m):
      if n // s - i >= 0:
        out[:, n] += x[:, n // s - i] @ w[:, i * s + n % s]
  return out + b


def np_residual_unit(x, unit):
  return x + np_causal_conv(elu(np_causal_conv(elu(x), unit.dilated)), unit.pointwise)


def np_encoder_block(x, block):
  for unit in block.units:
    x = np_residual_unit(x, unit)
  return np_causal_conv(elu(x), block.down)


def np_decoder_block(x, block):
  x = np_conv_transpose(elu(x), block.up)
  for unit in block.units:
    x = np_residual_unit(x, unit)
  return x


def nonzero_biases(module, seed=0):
  """Random biases everywhere (they start at zero, which would hide a missing bias)."""
  rng = np.random.default_rng(seed)
  for _, node in nnx.iter_graph(module):
    if isinstance(node, (CausalConv1d, CausalConvTranspose1d, Conv2d)):
      node.bias[...] = jnp.asarray(rng.normal(size=node.bias.shape) * 0.1, jnp.float32)
  return module


def randn(*shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def call(module, x):
  return np.asarray(nnx.jit(lambda m, x: m(x))(module, jnp.asarray(x)))


# --- Conv2d -------------------------------------------------------------------------------------
def np_conv2d_same(x, conv):
  """x [B, H, W, Cin]: output (i, j) is centred on input (i sh, j sw), taps from -(k-1)//2 to k//2
  (zero outside), so the output is [B, ceil(H / sh), ceil(W / sw), Cout]."""
  w, b = params(conv)
  (kh, kw), (sh, sw) = w.shape[:2], conv.stride
  bsz, h, wd, _ = x.shape
  ho, wo = -(-h // sh), -(-wd // sw)
  out = np.zeros((bsz, ho, wo, w.shape[-1]))
  for i in range(ho):
    for j in range(wo):
      for a in range(kh):
        for c in range(kw):
          y, z = i * sh + a - (kh - 1) // 2, j * sw + c - (kw - 1) // 2
          if 0 <= y < h and 0 <= z < wd:
            out[:, i, j] += x[:, y, z] @ w[a, c]
  return out + b


@pytest.mark.parametrize("kernel,stride,hw,want_hw", [
    ((3, 9), (1, 2), (5, 11), (5, 6)),     # the STFT discriminator's strided layers
    ((3, 9), (2, 2), (7, 12), (4, 6)),
    ((4, 4), (1, 1), (6, 5), (6, 5)),      # even kernel: one more row/column of padding after
    ((7, 7), (1, 1), (3, 4), (3, 4)),      # kernel larger than the input
])
def test_conv2d_matches_centred_numpy_conv(kernel, stride, hw, want_hw):
  conv = nonzero_biases(Conv2d(2, 3, kernel, stride, rngs=nnx.Rngs(0)))
  assert conv.kernel[...].shape == (*kernel, 2, 3)
  x = randn(2, *hw, 2)
  got = np.asarray(conv(jnp.asarray(x)))
  assert got.shape == (2, *want_hw, 3)
  np.testing.assert_allclose(got, np_conv2d_same(x, conv), rtol=1e-5, atol=1e-5)
  if stride == (1, 1):  # at stride 1 it is exactly XLA's "SAME"
    want = jax.lax.conv_general_dilated(jnp.asarray(x), conv.kernel[...], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(got, np.asarray(want + conv.bias[...]), rtol=1e-5, atol=1e-5)


def test_conv2d_bias_only_on_zero_input():
  conv = Conv2d(1, 4, (3, 3), rngs=nnx.Rngs(1))
  conv.bias[...] = jnp.array([1.0, -2.0, 0.5, 3.0])
  out = np.asarray(conv(jnp.zeros((1, 4, 5, 1))))
  assert out.shape == (1, 4, 5, 4)
  np.testing.assert_array_equal(out, np.broadcast_to([1.0, -2.0, 0.5, 3.0], (1, 4, 5, 4)))


# --- SEANet -------------------------------------------------------------------------------------
def test_residual_unit_is_x_plus_pointwise_of_dilated():
  unit = nonzero_biases(ResidualUnit(3, 2, 5, rngs=nnx.Rngs(0)))
  assert unit.dilated.kernel[...].shape == (5, 3, 3) and unit.dilated.dilation == 2
  assert unit.pointwise.kernel[...].shape == (1, 3, 3)
  x = randn(2, 20, 3)                                               # [B, N, W]
  got = call(unit, x)
  assert got.shape == (2, 20, 3)
  np.testing.assert_allclose(got, np_residual_unit(x, unit), rtol=1e-5, atol=1e-5)
  # With the 1x1 conv zeroed the unit is the identity (the skip connection carries x unchanged).
  unit.pointwise.kernel[...] = jnp.zeros_like(unit.pointwise.kernel[...])
  unit.pointwise.bias[...] = jnp.zeros((3,))
  np.testing.assert_array_equal(call(unit, x), x)


def test_residual_unit_is_causal():
  unit = ResidualUnit(2, 3, 7, rngs=nnx.Rngs(0))
  x = randn(1, 40, 2)
  y = x.copy()
  y[:, 25:] += 1.0                                                  # change samples >= 25
  a, b = call(unit, x), call(unit, y)
  np.testing.assert_array_equal(a[:, :25], b[:, :25])
  assert np.all(np.abs(a[:, 25] - b[:, 25]) > 1e-3)                 # the skip path at least


@pytest.mark.parametrize("stride,n", [(2, 20), (3, 23), (4, 16)])
def test_encoder_block_values_and_length(stride, n):
  block = nonzero_biases(EncoderBlock(2, 4, stride, TINY, rngs=nnx.Rngs(0)))
  assert [u.dilated.dilation for u in block.units] == [1, 3]        # TINY.dilations
  assert [u.dilated.kernel[...].shape[0] for u in block.units] == [3, 3]
  assert block.down.kernel[...].shape == (2 * stride, 2, 4) and block.down.stride == stride
  x = randn(2, n, 2)                                                # [B, N, Win]
  got = call(block, x)
  assert got.shape == (2, n // stride, 4)                           # [B, N // S, Wout]
  np.testing.assert_allclose(got, np_encoder_block(x, block), rtol=1e-5, atol=1e-5)


def test_encoder_block_is_causal_per_frame():
  block = EncoderBlock(2, 4, 3, TINY, rngs=nnx.Rngs(0))
  x = randn(1, 18, 2)
  y = x.copy()
  y[:, 10] += 1.0                     # sample 10 belongs to frame 3 (samples 9..11)
  a, b = call(block, x), call(block, y)
  assert a.shape == (1, 6, 4)
  np.testing.assert_array_equal(a[:, :3], b[:, :3])
  assert np.abs(a[:, 3] - b[:, 3]).max() > 1e-4


@pytest.mark.parametrize("stride,t", [(2, 5), (3, 4)])
def test_decoder_block_values_and_length(stride, t):
  block = nonzero_biases(DecoderBlock(4, 2, stride, TINY, rngs=nnx.Rngs(0)))
  assert block.up.kernel[...].shape == (4, 2 * stride, 2)           # kernel = 2 * stride
  assert [u.dilated.dilation for u in block.units] == [1, 3]
  x = randn(2, t, 4)                                                # [B, T, Win]
  got = call(block, x)
  assert got.shape == (2, t * stride, 2)                            # [B, T * S, Wout]
  np.testing.assert_allclose(got, np_decoder_block(x, block), rtol=1e-5, atol=1e-5)


def test_decoder_block_is_causal_per_frame():
  block = DecoderBlock(4, 2, 3, TINY, rngs=nnx.Rngs(0))
  x = randn(1, 5, 4)
  y = x.copy()
  y[:, 2] += 1.0                      # frame 2 first reaches output sample 2 * 3 = 6
  a, b = call(block, x), call(block, y)
  assert a.shape == (1, 15, 2)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert np.abs(a[:, 6] - b[:, 6]).max() > 1e-4


def test_encoder_widths_values_and_frame_count():
  enc = nonzero_biases(Encoder(TINY, rngs=nnx.Rngs(0)))
  assert enc.stem.kernel[...].shape == (7, 1, 2)                    # 1 -> C, k7
  assert [b.down.kernel[...].shape for b in enc.blocks] == [(4, 2, 4), (6, 4, 8)]   # k = 2 S
  assert enc.head.kernel[...].shape == (3, 8, 5)                    # C * m_last -> D, k3
  wave = randn(2, 31)                                               # [B, N]; 31 // 6 = 5 frames
  got = call(enc, wave)
  assert got.shape == (2, 5, 5)                                     # [B, N // hop, D]
  x = np_causal_conv(wave[..., None].astype(np.float64), enc.stem)
  for block in enc.blocks:
    x = np_encoder_block(x, block)
  want = np_causal_conv(elu(x), enc.head)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The trailing partial frame (sample 30) is not read: 30 samples give the same 5 frames.
  np.testing.assert_allclose(call(enc, wave[:, :30]), got, rtol=1e-6, atol=1e-6)


def test_encoder_is_causal_per_hop():
  enc = Encoder(TINY, rngs=nnx.Rngs(0))
  wave = randn(1, 36)
  other = wave.copy()
  other[:, 13:] = randn(1, 23, seed=1)  # samples from 13 on: frame 2 (samples 12..17) onwards
  a, b = call(enc, wave), call(enc, other)
  assert a.shape == (1, 6, 5)
  np.testing.assert_array_equal(a[:, :2], b[:, :2])
  assert np.abs(a[:, 2] - b[:, 2]).max() > 1e-5


# --- discriminators ------------------------------------------------------------------------------
def np_stft(wave, n_fft):
  """[B, N] -> [B, ceil(N / hop), n_fft // 2 + 1], hop n_fft / 4, end zero-padded, periodic Hann
  window divided by its sum."""
  hop = n_fft // 4
  num = -(-wave.shape[1] // hop)
  padded = np.pad(wave.astype(np.float64), ((0, 0), (0, num * hop + n_fft - hop - wave.shape[1])))
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  frames = np.stack([padded[:, f * hop:f * hop + n_fft] for f in range(num)], 1)
  return np.fft.rfft(frames * window / window.sum(), axis=-1)


def test_stft_discriminator_input_is_the_complex_stft():
  disc = STFTDiscriminator(16, 3, 1, rngs=nnx.Rngs(0))
  # Stem kernel = identity on the centre tap: feature map 0 is lrelu([real, imag, 0]).
  k = np.zeros((7, 7, 2, 3), np.float32)
  k[3, 3, 0, 0] = k[3, 3, 1, 1] = 1.0
  disc.stem.kernel[...] = jnp.asarray(k)
  wave = randn(2, 50)
  logits, feats = disc(jnp.asarray(wave))
  spec = np_stft(wave, 16)                                          # [2, 13, 9]
  assert feats[0].shape == (2, 13, 9, 3)
  np.testing.assert_allclose(np.asarray(feats[0][..., 0]), lrelu(spec.real), atol=1e-5)
  np.testing.assert_allclose(np.asarray(feats[0][..., 1]), lrelu(spec.imag), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(feats[0][..., 2]), 0.0)
  # Then one conv layer (time stride 1, freq stride 2) and the 3x3 head, on those features.
  x = lrelu(np_conv2d_same(np.asarray(feats[0], np.float64), disc.convs[0]))
  np.testing.assert_allclose(np.asarray(feats[1]), x, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits), np_conv2d_same(x, disc.head), rtol=1e-4,
                             atol=1e-5)


def test_stft_discriminator_shapes_strides_and_width_cap():
  # Shapes only: an abstract module (nothing initialized or compiled).
  disc = nnx.eval_shape(lambda: STFTDiscriminator(16, 2, 4, rngs=nnx.Rngs(0)))
  # Widths C * 2^i capped at 8 C = 16; strides (1, 2), (2, 2), (1, 2), (2, 2).
  assert [c.kernel.shape for c in disc.convs] == [(3, 9, 2, 4), (3, 9, 4, 8), (3, 9, 8, 16),
                                                  (3, 9, 16, 16)]
  assert [c.stride for c in disc.convs] == [(1, 2), (2, 2), (1, 2), (2, 2)]
  assert disc.stem.kernel.shape == (7, 7, 2, 2) and disc.head.kernel.shape == (3, 3, 16, 1)
  logits, feats = nnx.eval_shape(lambda m, w: m(w), disc,
                                 jax.ShapeDtypeStruct((2, 64), jnp.float32))
  # 64 samples, hop 4: 16 frames x 9 bins; time 16 -> 16 -> 8 -> 8 -> 4, freq 9 -> 5 -> 3 -> 2 -> 1.
  assert [f.shape for f in feats] == [(2, 16, 9, 2), (2, 16, 5, 4), (2, 8, 3, 8), (2, 8, 2, 16),
                                      (2, 4, 1, 16)]
  assert logits.shape == (2, 4, 1, 1)


def test_wave_discriminator_matches_numpy_with_grouped_convs():
  disc = nonzero_biases(WaveDiscriminator(2, 2, max_width=16, rngs=nnx.Rngs(0)))
  # Widths 2 -> 8 -> min(32, 16); groups max(width_in // 4, 1) = 1, then 2.
  assert [(c.kernel[...].shape, c.stride, c.groups) for c in disc.convs] == [
      ((41, 2, 8), 4, 1), ((41, 4, 16), 4, 2)]
  wave = randn(2, 64)
  logits, feats = nnx.jit(lambda m, w: m(w))(disc, jnp.asarray(wave))
  assert [f.shape for f in feats] == [(2, 64, 2), (2, 16, 8), (2, 4, 16), (2, 4, 16)]
  assert logits.shape == (2, 4, 1)
  x = lrelu(np_causal_conv(wave[..., None].astype(np.float64), disc.stem))
  want = [x]
  for conv in disc.convs:
    x = lrelu(np_causal_conv(x, conv))
    want.append(x)
  x = lrelu(np_causal_conv(x, disc.post))
  want.append(x)
  for got, ref in zip(feats, want):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits), np_causal_conv(x, disc.head), rtol=1e-4,
                             atol=1e-5)
  # Two groups: outputs 0..7 read input channels 0..3 only, outputs 8..15 channels 4..7 only, so
  # changing channels 4..7 leaves outputs 0..7 exactly as they were.
  h = np.asarray(feats[1])                                          # [2, 16, 8]
  bumped = h.copy()
  bumped[..., 4:] += 1.0
  moved = np.abs(call(disc.convs[1], bumped) - call(disc.convs[1], h)).max(axis=(0, 1))
  assert np.all(moved[:8] == 0) and np.all(moved[8:] > 1e-3)


# --- StepCounter ---------------------------------------------------------------------------------
MODEL = SoundStreamConfig(
    channels=2, channel_mults=(1, 2), strides=(2, 4), dilations=(1,), residual_kernel=3,
    embed_dim=4, num_levels=2, codebook_size=4, kmeans_iters=1, stft_disc_ffts=(16,),
    stft_disc_channels=2, stft_disc_layers=1, wave_disc_scales=1, wave_disc_channels=2,
    wave_disc_layers=1, wave_disc_max_width=8, mel_windows=(16,), num_mels=4,
    adversarial_start_step=2)


def test_step_counter_counts_generator_training_steps_and_gates_adversarial_losses():
  model = init_model(MODEL)        # one jitted init (eager init compiles op by op: 2.5x slower)
  counters = nnx.state(model, StepCounter)
  assert list(counters.keys()) == ["generator_steps"]              # the only one, not a Param
  assert "generator_steps" not in nnx.state(model, nnx.Param)
  assert model.generator_steps[...].dtype == jnp.int32 and int(model.generator_steps[...]) == 0
  batch = {"wave": jnp.asarray(randn(2, 64) * 0.3)}
  key = jax.random.key(0)
  gen = nnx.jit(lambda m, b, k: m.loss(b, key=k, train=True, group="generator"))
  evaluate = nnx.jit(lambda m, b, k: m.loss(b, key=k, train=False, group="generator"))
  disc = nnx.jit(lambda m, b, k: m.loss(b, key=k, train=True, group="discriminator"))

  # Before 2 generator steps the discriminators are off: no adversarial term, disc loss exactly 0.
  loss, metrics = disc(model, batch, key)
  assert float(loss) == 0.0 and float(metrics["real_logit"]) == 0.0
  ons = []
  for _ in range(3):
    _, metrics = gen(model, batch, key)
    ons.append(float(metrics["adversarial_on"]))
  assert ons == [0.0, 0.0, 1.0]                   # read before the increment: 0, 1, 2 >= 2
  assert int(model.generator_steps[...]) == 3
  # Evaluation and discriminator steps do not count.
  _, metrics = evaluate(model, batch, key)
  assert float(metrics["adversarial_on"]) == 1.0 and float(metrics["adversarial"]) != 0.0
  loss, _ = disc(model, batch, key)
  assert float(loss) > 0.0                        # hinge loss of random discriminators ~ 2
  assert int(model.generator_steps[...]) == 3


# --- CodebookState / RVQOutput -------------------------------------------------------------------
def _hand_rvq():
  """3 levels x 4 codes in 2-D at scales 10, 1, 0.1: greedy nearest-code search recovers the
  level-by-level choice of any sum of one code per level exactly."""
  base = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], np.float32)
  rvq = ResidualVQ(3, 4, 2, quantizer_dropout=0.0, rngs=nnx.Rngs(0))
  rvq.codebook[...] = jnp.asarray(np.stack([10 * base, base, 0.1 * base]))    # [L, K, D]
  return rvq, np.stack([10 * base, base, 0.1 * base])


def test_rvq_output_codes_sum_norms_and_commitment_of_codebook_sums():
  rvq, cb = _hand_rvq()
  picks = np.array([[0, 1, 2], [3, 3, 0], [1, 1, 3]])                # [T, L] code per level
  exact = np.stack([cb[0][i] + cb[1][j] + cb[2][k] for i, j, k in picks])   # [T, D]
  delta = np.array([[0.01, -0.02], [0.0, 0.03], [-0.02, 0.0]], np.float32)
  z = (exact + delta)[None].astype(np.float32)                      # [1, T, D]
  out = nnx.jit(lambda m, z: m(z))(rvq, jnp.asarray(z))
  assert isinstance(out, RVQOutput)
  assert out.codes.dtype == jnp.int32 and out.codes.shape == (1, 3, 3)         # [B, L, T]
  np.testing.assert_array_equal(np.asarray(out.codes)[0], picks.T)
  np.testing.assert_allclose(np.asarray(out.quantized)[0], exact, atol=1e-5)   # sum of codes
  np.testing.assert_allclose(np.asarray(rvq.dequantize(out.codes)), np.asarray(out.quantized),
                             atol=1e-6)
  # Residuals: z, then z minus each level's code; norms are their RMS; commitment the mean over
  # levels of the mean squared (residual entering the level - its code) = the residual after it.
  def residuals(z):
    res = [z]
    for level in range(3):
      res.append(res[-1] - cb[level][picks[:, level]])
    return res

  res = residuals(z[0].astype(np.float64))
  np.testing.assert_allclose(res[-1], delta, atol=1e-5)
  want_norms = [np.sqrt(np.mean(r ** 2)) for r in res]
  np.testing.assert_allclose(np.asarray(out.residual_norms), want_norms, rtol=1e-4)
  assert np.all(np.diff(want_norms) < 0)                            # 10s, 1s, 0.1s, 0.01s
  want_commit = np.mean([np.mean(r ** 2) for r in res[1:]])
  assert float(out.commitment) == pytest.approx(want_commit, rel=1e-4)
  # Exactly on the codebook sums: same codes, the last residual vanishes, and the commitment is
  # what the finer levels leave at the coarser ones: mean(|b_j + 0.1 b_k|^2 / 2, |0.1 b_k|^2 / 2,
  # 0) per vector, with |b| = 1 and b_j . b_k in {1, 0, -1}.
  on = nnx.jit(lambda m, z: m(z))(rvq, jnp.asarray(exact[None], jnp.float32))
  np.testing.assert_array_equal(np.asarray(on.codes), np.asarray(out.codes))
  assert float(on.residual_norms[-1]) < 1e-6
  exact_res = residuals(exact.astype(np.float64))
  assert float(on.commitment) == pytest.approx(np.mean([np.mean(r ** 2) for r in exact_res[1:]]),
                                               rel=1e-5)
  # Level 0: |b_j + 0.1 b_k|^2 = 1.01 + 0.2 b_j . b_k: 1.01, 1.01 and (b_1 . b_3 = -1) 0.81;
  # level 1: |0.1 b_k|^2 = 0.01; level 2: 0. Each / D = 2, mean over vectors, then over levels.
  level0, level1 = (1.01 + 1.01 + 0.81) / 3 / 2, 0.01 / 2
  assert float(on.commitment) == pytest.approx((level0 + level1 + 0.0) / 3, rel=1e-5)


def test_rvq_output_is_a_pytree_and_passes_gradients_straight_through():
  rvq, _ = _hand_rvq()
  z = jnp.asarray(randn(2, 3, 2))
  out = nnx.jit(lambda m, z: m(z))(rvq, z)
  leaves = jax.tree_util.tree_leaves(out)
  assert len(leaves) == 4 + len(out.metrics)      # quantized, codes, commitment, norms, metrics
  doubled = jax.tree_util.tree_map(lambda x: 2 * x, out)
  np.testing.assert_allclose(np.asarray(doubled.quantized), 2 * np.asarray(out.quantized))
  # d/dz sum(c * quantized) = c: the straight-through estimator copies the gradient to z.
  c = jnp.asarray(randn(2, 3, 2, seed=1))
  grad = nnx.jit(lambda m, z: jax.grad(lambda z: jnp.sum(c * m(z).quantized))(z))(rvq, z)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(c), rtol=1e-6)


def test_codebook_state_holds_the_ema_buffers_which_only_update_changes():
  rvq = ResidualVQ(2, 4, 3, kmeans_iters=1, rngs=nnx.Rngs(0))
  buffers = nnx.state(rvq, CodebookState)
  assert {k: v.shape for k, v in buffers.items()} == {
      "codebook": (2, 4, 3), "ema_count": (2, 4), "ema_sum": (2, 4, 3), "initialized": ()}
  assert len(nnx.state(rvq, nnx.Param)) == 0       # nothing for an optimizer to train
  np.testing.assert_array_equal(np.asarray(rvq.ema_count[...]), 1.0)
  np.testing.assert_array_equal(np.asarray(rvq.ema_sum[...]), np.asarray(rvq.codebook[...]))
  assert int(rvq.initialized[...]) == 0
  z = jnp.asarray(randn(2, 8, 3))
  before = jax.tree_util.tree_map(np.asarray, nnx.state(rvq, CodebookState))
  # Gradients (w.r.t. Params, nnx's default) do not reach the buffers: the grad state is empty.
  grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(z).quantized ** 2)))(rvq)
  assert len(jax.tree_util.tree_leaves(grads)) == 0
  nnx.jit(lambda m, z: m(z, train=True, update=False))(rvq, z)
  after = nnx.state(rvq, CodebookState)
  for name in before:
    np.testing.assert_array_equal(np.asarray(after[name][...]), before[name][...])
  nnx.jit(lambda m, z: m(z, train=True, update=True))(rvq, z)       # k-means init + EMA step
  assert int(rvq.initialized[...]) == 1
  assert not np.allclose(np.asarray(rvq.codebook[...]), before["codebook"][...])
  # After the update the buffers are consistent: codebook = ema_sum / smoothed(ema_count) per code.
  count = np.asarray(rvq.ema_count[...], np.float64)
  n = count.sum(-1, keepdims=True)
  smoothed = (count + rvq.eps) / (n + 4 * rvq.eps) * n
  # Re-seeded (dead) codes sit at exactly the threshold count with sum = threshold x code.
  reseeded = count == rvq.dead_code_threshold
  want = np.asarray(rvq.ema_sum[...]) / np.where(reseeded, rvq.dead_code_threshold,
                                                 smoothed)[..., None]
  np.testing.assert_allclose(np.asarray(rvq.codebook[...]), want, rtol=1e-4, atol=1e-6)


def test_rvq_output_with_fewer_levels_repeats_norms_and_counts_unused_levels_as_zero():
  """num_levels=1 of 3: levels 1-2 quantize nothing; their residual norms repeat level 0's (the
  residual is unchanged) instead of reading 0, and the commitment is level 0's / 3 (dropped levels
  count 0, as vector-quantize-pytorch's)."""
  rvq, cb = _hand_rvq()
  z = np.array([[[10.3, 0.2], [0.1, -9.6]]], np.float32)           # [1, T=2, D]
  out = nnx.jit(lambda m, z: m(z, num_levels=1))(rvq, jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(out.codes)[0, 0], [0, 3])     # 10 b_0, 10 b_3
  after0 = z[0] - cb[0][[0, 3]]                                      # [[0.3, 0.2], [0.1, 0.4]]
  rms0 = np.sqrt(np.mean(after0 ** 2))
  np.testing.assert_allclose(np.asarray(out.residual_norms),
                             [np.sqrt(np.mean(z ** 2)), rms0, rms0, rms0], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.quantized)[0], cb[0][[0, 3]], atol=1e-6)
  assert float(out.commitment) == pytest.approx(np.mean(after0 ** 2) / 3, rel=1e-5)
