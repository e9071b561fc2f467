"""MAGVIT-v2 architecture: paper-scale shapes (eval_shape only), causality, image == first latent
frame, depth-to-space, bad-input errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit import blocks, lfq, preset
from vp_jax.models.magvit.tokenizer import MagvitTokenizer, create_tokenizer

TINY = preset("tiny")


@pytest.fixture(scope="module")
def paper_model():
  """The paper-scale tokenizer, abstract (shapes only; never allocated)."""
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: MagvitTokenizer(preset("paper"), rngs=nnx.Rngs(0)))


def _abstract_latent(model, t, h, w):
  def run(m, x):
    z = m.encoder(x)
    return z, m.decoder(z)
  return nnx.eval_shape(run, model, jax.ShapeDtypeStruct((1, t, h, w, 3), jnp.float32))


@pytest.mark.parametrize("thw,latent", [((17, 128, 128), (5, 16, 16)),
                                        ((17, 224, 128), (5, 28, 16)),
                                        ((1, 128, 128), (1, 16, 16)),
                                        ((41, 128, 128), (11, 16, 16))])
def test_paper_preset_shapes(paper_model, thw, latent):
  cfg = preset("paper")
  assert cfg.codebook_size == 2 ** 18
  assert cfg.latent_shape(*thw) == latent
  z, recon = _abstract_latent(paper_model, *thw)
  assert z.shape == (1, *latent, 18)
  assert recon.shape == (1, *thw, 3)
  assert int(np.prod(latent)) == {(5, 16, 16): 1280, (5, 28, 16): 2240, (1, 16, 16): 256,
                                  (11, 16, 16): 2816}[latent]


def _expected_params(cfg):
  """Parameter count from the architecture's definition (widths, blocks, kernels)."""
  kt, d = cfg.temporal_kernel, cfg.embedding_dim
  conv = lambda k, cin, cout: k * cin * cout + cout
  res = lambda cin, cout: (2 * cin + conv(9 * kt, cin, cout) + 2 * cout + conv(9 * kt, cout, cout)
                           + (conv(1, cin, cout) if cin != cout else 0))
  widths = [cfg.filters * m for m in cfg.channel_multipliers]
  n, w = conv(9 * kt, 3, cfg.filters), cfg.filters
  for level, width in enumerate(widths):                      # encoder
    for _ in range(cfg.num_res_blocks):
      n, w = n + res(w, width), width
    if level < len(widths) - 1:
      n += conv(9 * kt, w, w)
  n += cfg.num_res_blocks * res(w, w) + 2 * w + conv(1, w, d)
  nd = cfg.num_res_blocks if cfg.decoder_res_blocks is None else cfg.decoder_res_blocks
  n += conv(9 * kt, d, w) + nd * res(w, w)                     # decoder
  for level in reversed(range(len(widths))):
    n += d * 2 * w + 2 * w                                     # adaptive group norm
    for _ in range(nd):
      n, w = n + res(w, widths[level]), widths[level]
    if level > 0:
      up = 9 * kt if cfg.upsample_kernel == 3 else 1
      n += conv(up, w, w * 4 * (2 if cfg.temporal_downsample[level - 1] else 1))
  return n + 2 * w + conv(9 * kt, w, 3)


@pytest.mark.parametrize("name", ["paper", "small_image", "small", "tiny", "small:up1",
                                  "small:dec2"])
def test_parameter_count(paper_model, name):
  variants = {"small:up1": dict(upsample_kernel=1), "small:dec2": dict(decoder_res_blocks=2)}
  cfg = preset("small", **variants[name]) if name in variants else preset(name)
  with nnx.use_eager_sharding(False):
    model = paper_model if name == "paper" else nnx.eval_shape(
        lambda: MagvitTokenizer(cfg, rngs=nnx.Rngs(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == _expected_params(cfg)
  if name == "paper":
    assert n == 370_575_253      # encoder + decoder of the paper-scale preset


def _tiny_model(seed=0):
  return create_tokenizer(TINY, seed)


_encoder = nnx.jit(lambda m, x: m.encoder(x))
_decode = nnx.jit(lambda m, ids: m.decode(ids))


def test_causality_and_image_is_first_latent_frame():
  model = _tiny_model()
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.uniform(-1, 1, (2, 9, 16, 16, 3)), jnp.float32)
  z = _encoder(model, video)
  ids = lfq.bits_to_ids(z > 0)
  assert ids.shape == (2, 3, 2, 2) and ids.dtype == jnp.int32
  # Change the frames after chunk 1 (frames 5..8): latent frames 0 and 1 must not change.
  changed = video.at[:, 5:].set(jnp.asarray(rng.uniform(-1, 1, (2, 4, 16, 16, 3))))
  z2 = _encoder(model, changed)
  np.testing.assert_array_equal(np.asarray(z2[:, :2]), np.asarray(z[:, :2]))
  assert float(jnp.max(jnp.abs(z2[:, 2] - z[:, 2]))) > 1e-3    # the last chunk does change
  # Changing frame 1 changes latent frame 1 but not latent frame 0.
  z3 = _encoder(model, video.at[:, 1].add(0.5))
  np.testing.assert_array_equal(np.asarray(z3[:, 0]), np.asarray(z[:, 0]))
  assert float(jnp.max(jnp.abs(z3[:, 1] - z[:, 1]))) > 1e-3
  # An image tokenizes like the first latent frame of a video starting with it.
  image_z = _encoder(model, video[:, :1])
  np.testing.assert_allclose(np.asarray(image_z[:, 0]), np.asarray(z[:, 0]), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(lfq.bits_to_ids(image_z > 0)[:, 0]),
                                np.asarray(ids[:, 0]))


@pytest.mark.parametrize("upsample_kernel", [3, 1])
def test_decoder_is_causal(upsample_kernel):
  model = create_tokenizer(dataclasses.replace(TINY, upsample_kernel=upsample_kernel), 1)
  ids = jnp.asarray(np.random.default_rng(1).integers(0, 2 ** 18, (1, 3, 2, 2)), jnp.int32)
  out = _decode(model, ids)
  assert out.shape == (1, 9, 16, 16, 3)
  out2 = _decode(model, ids.at[:, 2].set((ids[:, 2] + 12345) % 2 ** 18))
  # Latent frame 2 decodes frames 5..8; frames 0..4 do not depend on it.
  np.testing.assert_array_equal(np.asarray(out2[:, :5]), np.asarray(out[:, :5]))
  assert float(jnp.max(jnp.abs(out2[:, 5:] - out[:, 5:]))) > 1e-4
  single = _decode(model, ids[:, :1])
  np.testing.assert_allclose(np.asarray(single[:, 0]), np.asarray(out[:, 0]), atol=1e-5)


def test_depth_to_space_layout():
  # Channel layout (t, dy, dx, C): value encodes its destination.
  x = jnp.arange(2 * 2 * 2 * 2, dtype=jnp.float32).reshape(1, 1, 1, 1, 16)  # t=2, 2x2, C=2
  y = blocks.depth_to_space(x, temporal=True, features=2)
  assert y.shape == (1, 1, 2, 2, 2)        # first sub-frame dropped: 1 frame -> 1 frame
  np.testing.assert_array_equal(np.asarray(y[0, 0, 1, 0]), [12.0, 13.0])  # t=1, dy=1, dx=0
  x2 = jnp.zeros((1, 3, 1, 1, 16))
  assert blocks.depth_to_space(x2, True, 2).shape == (1, 5, 2, 2, 2)
  assert blocks.depth_to_space(jnp.zeros((1, 3, 1, 1, 8)), False, 2).shape == (1, 3, 2, 2, 2)


def test_group_norm_is_per_frame():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 3, 4, 4, 8)), jnp.float32)
  y = blocks.group_norm(x, 4)
  np.testing.assert_allclose(np.asarray(blocks.group_norm(x[:, :1], 4)), np.asarray(y[:, :1]),
                             atol=1e-6)
  g = np.asarray(y).reshape(1, 3, 4, 4, 4, 2)
  np.testing.assert_allclose(g.mean(axis=(2, 3, 5)), 0.0, atol=1e-5)
  np.testing.assert_allclose(g.var(axis=(2, 3, 5)), 1.0, atol=1e-3)


def test_group_moments_against_numpy():
  """Per-(frame, group) mean and centered variance; a large offset checks the two-pass variance
  (a one-pass E[x^2] - E[x]^2 would lose most digits at offset 300 with std 0.5)."""
  rng = np.random.default_rng(5)
  x = (rng.normal(size=(2, 3, 4, 6, 12)) * 0.5 + 300.0).astype(np.float32)
  mean, var = blocks.group_moments(jnp.asarray(x), 3)
  g = x.astype(np.float64).reshape(2, 3, 4, 6, 3, 4)
  assert mean.shape == var.shape == (2, 3, 3)
  np.testing.assert_allclose(np.asarray(mean), g.mean(axis=(2, 3, 5)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(var), g.var(axis=(2, 3, 5)), rtol=1e-3)
  assert 0.2 < float(var.min()) and float(var.max()) < 0.3


def test_group_norm_affine_arguments():
  """group_norm(x, g, scale, shift) == GN(x) * scale + shift for per-channel [C] and per-(frame,
  channel) [B, T, 1, 1, C] scale and shift, against a numpy group norm."""
  rng = np.random.default_rng(6)
  x = rng.normal(size=(2, 3, 4, 4, 8)).astype(np.float32) * 2 + 1
  g = x.astype(np.float64).reshape(2, 3, 4, 4, 4, 2)
  mu, var = g.mean(axis=(2, 3, 5), keepdims=True), g.var(axis=(2, 3, 5), keepdims=True)
  want = ((g - mu) / np.sqrt(var + 1e-6)).reshape(x.shape)
  np.testing.assert_allclose(np.asarray(blocks.group_norm(jnp.asarray(x), 4)), want, atol=2e-5)
  for shape in [(8,), (2, 3, 1, 1, 8)]:
    scale = rng.normal(size=shape).astype(np.float32)
    shift = rng.normal(size=shape).astype(np.float32)
    got = blocks.group_norm(jnp.asarray(x), 4, jnp.asarray(scale), jnp.asarray(shift))
    np.testing.assert_allclose(np.asarray(got), want * scale + shift, atol=1e-4)


def test_group_sums_lowering_per_platform():
  """On CPU the group sums run in two stages split by an optimization barrier; other platforms
  reduce in one step. Both give the same sums."""
  x = jnp.asarray(np.random.default_rng(7).normal(size=(1, 2, 4, 4, 8)), jnp.float32)
  traced = jax.jit(lambda x: blocks.group_moments(x, 2)).trace(x)
  assert "optimization_barrier" in traced.lower(lowering_platforms=("cpu",)).as_text()
  for other in ("tpu", "cuda"):
    assert "optimization_barrier" not in traced.lower(lowering_platforms=(other,)).as_text()
  v = x.reshape(1, 2, 16, 2, 4)
  two_stage = jnp.sum(jnp.sum(v, axis=-1), axis=2)
  np.testing.assert_allclose(np.asarray(blocks._group_sums(v)), np.asarray(two_stage), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(blocks._group_sums(v)),
                             np.asarray(v).sum(axis=(2, 4)), rtol=1e-5)


def test_latent_for_frames_is_causal():
  cond = jnp.arange(3.0).reshape(1, 3, 1)                 # latent frames 0, 1, 2
  got = blocks.latent_for_frames(cond, 9)                  # 4 frames per latent frame after 0
  np.testing.assert_array_equal(np.asarray(got[0, :, 0]), [0, 1, 1, 1, 1, 2, 2, 2, 2])
  got = blocks.latent_for_frames(cond, 5)                  # 2 frames per latent frame (a level)
  np.testing.assert_array_equal(np.asarray(got[0, :, 0]), [0, 1, 1, 2, 2])
  np.testing.assert_array_equal(np.asarray(blocks.latent_for_frames(cond[:, :1], 4)[0, :, 0]),
                                [0, 0, 0, 0])


def test_adaptive_group_norm():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 5, 4, 4, 8)), jnp.float32)       # 5 frames
  latent = jnp.asarray(rng.choice([-1.0, 1.0], size=(2, 3, 2, 2, 6)), jnp.float32)  # 3 latent
  with nnx.use_eager_sharding(False):
    norm = blocks.AdaptiveGroupNorm(8, 6, 4, rngs=nnx.Rngs(0))
  # Zero-initialized projections: plain group norm.
  np.testing.assert_allclose(np.asarray(norm(x, latent)), np.asarray(blocks.group_norm(x, 4)),
                             atol=1e-6)
  proj = rng.normal(size=(6, 16)).astype(np.float32)
  proj_bias = rng.normal(size=(16,)).astype(np.float32)
  norm.proj[...], norm.proj_bias[...] = jnp.asarray(proj), jnp.asarray(proj_bias)
  cond = np.asarray(latent).mean(axis=(2, 3))[:, [0, 1, 1, 2, 2]]     # [B, T, 6], causal map
  sb = cond @ proj + proj_bias
  scale, shift = sb[..., :8], sb[..., 8:]
  expected = (np.asarray(blocks.group_norm(x, 4)) * (1 + scale[:, :, None, None])
              + shift[:, :, None, None])
  np.testing.assert_allclose(np.asarray(norm(x, latent)), expected, rtol=1e-5, atol=1e-5)
  # Frames 0-2 see latent frames 0-1 only: changing latent frame 2 leaves them unchanged.
  other = norm(x, latent.at[:, 2].multiply(-1.0))
  np.testing.assert_array_equal(np.asarray(other[:, :3]), np.asarray(norm(x, latent)[:, :3]))
  assert float(jnp.max(jnp.abs(other[:, 3:] - norm(x, latent)[:, 3:]))) > 1e-3


@pytest.mark.parametrize("thw,match", [((16, 128, 128), "T=16"), ((0, 128, 128), "T=0"),
                                       ((17, 100, 128), "multiples of 8"),
                                       ((17, 128, 4), "multiples of 8")])
def test_bad_latent_shape(thw, match):
  with pytest.raises(ValueError, match=match):
    preset("paper").latent_shape(*thw)


def test_bad_config():
  with pytest.raises(ValueError, match="temporal_downsample"):
    preset("tiny", temporal_downsample=(True,))
  with pytest.raises(ValueError, match="num_groups"):
    preset("tiny", num_groups=3)
  with pytest.raises(ValueError, match="entropy_groups"):
    preset("paper", entropy_groups=1)
  with pytest.raises(ValueError, match="Unknown MAGVIT preset"):
    preset("huge")
  with pytest.raises(ValueError, match="upsample_kernel=2"):
    preset("tiny", upsample_kernel=2)
  cfg = preset("small")
  assert dataclasses.replace(cfg).to_json() == type(cfg).from_json(cfg.to_json()).to_json()


def test_variance_scaling_initializer():
  """The kernel init's variance (its uniform draws are tested in tests/test_hash_random.py)."""
  from vp_jax.models.magvit.conv import variance_scaling_uniform
  w = np.asarray(variance_scaling_uniform(2.0)(jax.random.PRNGKey(1), (3, 3, 3, 16, 32)))
  np.testing.assert_allclose(w.var(), 2.0 / (27 * 16), rtol=0.05)
  limit = np.sqrt(3.0 * 2.0 / (27 * 16))
  assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit


@pytest.mark.parametrize("kernel,strides,thw", [((3, 3, 3), (1, 1, 1), (5, 8, 6)),
                                                ((3, 3, 3), (2, 2, 2), (9, 8, 7)),
                                                ((1, 3, 3), (1, 1, 1), (3, 6, 6)),
                                                ((3, 3, 3), (1, 2, 2), (1, 7, 9)),
                                                ((1, 1, 1), (1, 1, 1), (5, 4, 4))])
def test_conv3d_as_2d_matches_native(kernel, strides, thw):
  """The CPU path (time taps concatenated into a 2D conv) computes the native causal 3D conv."""
  from vp_jax.models.magvit.conv import _same_pad, conv3d_as_2d, conv3d_native
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, *thw, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 5, 7)), jnp.float32)
  pad = [_same_pad(thw[1], kernel[1], strides[1]), _same_pad(thw[2], kernel[2], strides[2])]
  want = jax.jit(lambda a, b: conv3d_native(a, b, strides, pad))(x, k)
  got = jax.jit(lambda a, b: conv3d_as_2d(a, b, strides, pad))(x, k)
  assert got.shape == want.shape == (2, (thw[0] - 1) // strides[0] + 1,
                                     -(-thw[1] // strides[1]), -(-thw[2] // strides[2]), 7)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,thw", [((3, 3, 3), (5, 8, 6)), ((1, 3, 3), (3, 6, 7)),
                                         ((3, 1, 3), (1, 5, 5))])
def test_conv3d_tap_products_matches_native(kernel, thw):
  """The narrow-output CPU path (x @ every tap's kernel, then a sum of shifted slices) computes
  the native causal 3D conv, and its gradients are the native conv's."""
  from vp_jax.models.magvit.conv import _same_pad, conv3d_native, conv3d_tap_products
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, *thw, 12)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 12, 3)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(2, *thw, 3)), jnp.float32)
  pad = [_same_pad(thw[1], kernel[1], 1), _same_pad(thw[2], kernel[2], 1)]
  outs = {}
  for name, f in (("native", lambda a, b: conv3d_native(a, b, (1, 1, 1), pad)),
                  ("taps", lambda a, b: conv3d_tap_products(a, b, pad))):
    y, vjp = jax.vjp(jax.jit(f), x, k)
    outs[name] = (y, *vjp(dy))                                       # y, dx, dkernel
  assert outs["taps"][0].shape == (2, *thw, 3)
  for want, got in zip(outs["native"], outs["taps"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_uses_tap_products_rule():
  """Tap products for stride-1, multi-tap kernels whose Cin is >= 4x Cout: the decoder's conv to
  RGB at the small and paper widths; not tiny's (8 -> 3), not residual or 1x1x1 or strided convs."""
  from vp_jax.models.magvit.conv import uses_tap_products
  assert uses_tap_products((3, 3, 3, 32, 3), (1, 1, 1))
  assert uses_tap_products((1, 3, 3, 128, 3), (1, 1, 1))
  assert uses_tap_products((3, 3, 3, 32, 8), (1, 1, 1))
  assert not uses_tap_products((3, 3, 3, 8, 3), (1, 1, 1))
  assert not uses_tap_products((3, 3, 3, 32, 16), (1, 1, 1))
  assert not uses_tap_products((1, 1, 1, 128, 18), (1, 1, 1))
  assert not uses_tap_products((3, 3, 3, 128, 3), (2, 2, 2))


def test_small_decoder_output_conv_uses_tap_products():
  """The small preset's decoder conv to RGB lowers on CPU to one dot and slice adds instead of a
  convolution; a residual conv stays a convolution (XLA's; oneDNN's custom call when traced in
  `onednn_conv.use()` where XLA:CPU has it), all with the native conv's values."""
  from vp_jax.models.magvit.conv import CausalConv3d, conv3d_native
  from vp_jax.nn import onednn_conv
  with nnx.use_eager_sharding(False):
    conv = CausalConv3d(32, 3, (3, 3, 3), rngs=nnx.Rngs(0))
    wide = CausalConv3d(32, 32, (3, 3, 3), rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 5, 8, 8, 32)), jnp.float32)
  in_use = (0, 1) if onednn_conv.available() else (1, 0)
  for module, onednn, convs, dots in ((conv, False, (0, 0), 1), (wide, False, (1, 0), 0),
                                      (conv, True, (0, 0), 1), (wide, True, in_use, 0)):
    fn = lambda a, m=module: m(a)  # noqa: E731 - a new function per case: a fresh trace
    with onednn_conv.use(onednn):
      hlo = jax.jit(fn).lower(x).as_text()                       # lowered for this CPU
      got = jax.jit(fn)(x)
    assert (hlo.count("stablehlo.convolution"), hlo.count("@__onednn$convolution("),
            hlo.count("stablehlo.dot_general")) == (*convs, dots)
    want = conv3d_native(x, module.kernel[...], (1, 1, 1), [(1, 1), (1, 1)]) + module.bias[...]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,strides,thw", [((3, 3, 3), (1, 1, 1), (5, 8, 6)),
                                                ((3, 3, 3), (2, 2, 2), (9, 8, 7)),
                                                ((3, 3, 3), (1, 2, 2), (1, 7, 9)),
                                                ((1, 1, 1), (1, 1, 1), (5, 4, 4))])
def test_conv3d_onednn_matches_native_with_its_gradients(kernel, strides, thw):
  """The oneDNN CPU path computes the native causal 3D conv; its gradients (conv3d_as_2d's
  backward) are the native conv's."""
  from vp_jax.models.magvit.conv import _same_pad, conv3d_native, conv3d_onednn
  from vp_jax.nn import onednn_conv
  if not onednn_conv.available():
    pytest.skip("no oneDNN convolution in this XLA:CPU")
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, *thw, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 6, 5)), jnp.float32)
  pad = [_same_pad(thw[1], kernel[1], strides[1]), _same_pad(thw[2], kernel[2], strides[2])]
  dy = None
  outs = {}
  for name, f in (("native", lambda a, b: conv3d_native(a, b, strides, pad)),
                  ("onednn", lambda a, b: conv3d_onednn(a, b, strides, pad))):
    y, vjp = jax.vjp(jax.jit(f), x, k)
    if dy is None:
      dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    outs[name] = (y, *vjp(dy))                                       # y, dx, dkernel
  assert outs["onednn"][0].shape == outs["native"][0].shape
  for want, got in zip(outs["native"], outs["onednn"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_conv3d_onednn_bfloat16_operands():
  """operands="bfloat16": the native conv of the bfloat16-rounded operands, summed in float32 (a
  TPU's default precision), in x's dtype; its gradients are the float32 native conv's."""
  from vp_jax.models.magvit.conv import conv3d_native, conv3d_onednn
  from vp_jax.nn import onednn_conv
  if not onednn_conv.available("bfloat16"):
    pytest.skip("no fast oneDNN bfloat16 convolution on this CPU")
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 5, 8, 6, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 16, 8)), jnp.float32)
  pad = [(1, 1), (1, 1)]
  f = jax.jit(lambda a, b: conv3d_onednn(a, b, (1, 1, 1), pad, "bfloat16"))
  y, vjp = jax.vjp(f, x, k)
  round16 = lambda v: v.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
  want = conv3d_native(round16(x), round16(k), (1, 1, 1), pad)
  exact, native_vjp = jax.vjp(lambda a, b: conv3d_native(a, b, (1, 1, 1), pad), x, k)
  scale = float(jnp.max(jnp.abs(exact)))
  assert y.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(y - want))) < 2e-5 * scale < float(jnp.max(jnp.abs(y - exact)))
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for got, ref in zip(vjp(dy), native_vjp(dy)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-4)


def test_cpu_lowering_rule():
  """Inside `onednn_conv.use()`: bfloat16 operands by oneDNN for every conv where asked for
  (`use(operands="bfloat16")` or a bfloat16 model) and the CPU runs them fast; else tap products
  for narrow convs and oneDNN's float32 for the rest where available. XLA's 2D form otherwise
  (and always outside it: training), tap products for narrow convs."""
  from vp_jax.models.magvit.conv import cpu_lowering
  from vp_jax.nn import onednn_conv
  assert cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.float32) == "as_2d"
  with onednn_conv.use():
    wide = "onednn" if onednn_conv.available() else "as_2d"
    assert cpu_lowering((3, 3, 3, 32, 3), (1, 1, 1), jnp.float32) == "tap_products"
    assert cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.float32) == wide
    assert cpu_lowering((3, 3, 3, 128, 3), (2, 2, 2), jnp.float32) == wide
    assert cpu_lowering((1, 1, 1, 128, 18), (1, 1, 1), jnp.float32) == wide
    assert cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.bfloat16) == (
        "onednn_bf16" if onednn_conv.available("bfloat16") else "as_2d")
  with onednn_conv.use(operands="bfloat16"):
    bf16 = "onednn_bf16" if onednn_conv.available("bfloat16") else wide
    assert cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.float32) == bf16
    # the narrow conv too, where bfloat16 operands run (float32 tap products otherwise)
    assert cpu_lowering((3, 3, 3, 32, 3), (1, 1, 1), jnp.float32) == (
        "onednn_bf16" if bf16 == "onednn_bf16" else "tap_products")
  assert cpu_lowering((3, 3, 3, 32, 32), (1, 1, 1), jnp.bfloat16) == "as_2d"
  assert cpu_lowering((3, 3, 3, 32, 3), (1, 1, 1), jnp.bfloat16) == "tap_products"


@pytest.mark.parametrize("name,spatial,temporal,codes", [("paper", 8, 4, 2 ** 18),
                                                         ("small", 8, 4, 2 ** 18),
                                                         ("tiny_image", 8, 4, 2 ** 18)])
def test_compression_factors(name, spatial, temporal, codes):
  cfg = preset(name)
  assert (cfg.spatial_factor, cfg.temporal_factor, cfg.codebook_size) == (spatial, temporal, codes)
  # One temporal stride fewer halves the temporal factor; one level fewer halves the spatial one.
  fewer = preset(name, temporal_downsample=(False, False, True))
  assert fewer.temporal_factor == temporal // 2 and fewer.latent_shape(9, 64, 64) == (5, 8, 8)
  shallow = preset(name, channel_multipliers=(1, 2, 2), temporal_downsample=(True, True))
  assert shallow.spatial_factor == spatial // 2 and shallow.latent_shape(17, 64, 64) == (5, 16, 16)


@pytest.mark.parametrize("overrides,match", [
    (dict(embedding_dim=26, entropy_groups=2), "13 bits per entropy group"),
    (dict(temporal_kernel=2), "temporal_kernel=2"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(embedding_dim=17), "embedding_dim=17 is not divisible"),
    (dict(decoder_res_blocks=0), "decoder_res_blocks=0; each needs at least 1"),
    (dict(num_res_blocks=0), "num_res_blocks=0"),
])
def test_validate_rejects(overrides, match):
  import dataclasses as dc
  cfg = dc.replace(preset("tiny"), **overrides)   # replace() alone does not validate
  with pytest.raises(ValueError, match=match):
    cfg.validate()
  dc.replace(preset("tiny")).validate()           # the preset itself passes


def test_decoder_blocks_default_to_the_encoders():
  assert preset("small").decoder_blocks == 1 and preset("paper").decoder_blocks == 4
  assert preset("small", decoder_res_blocks=3).decoder_blocks == 3
  cfg = preset("small", decoder_res_blocks=2)
  from vp_jax.models.magvit.config import MagvitConfig
  assert MagvitConfig.from_json(cfg.to_json()) == cfg
  # A config written before the field existed reads as "same as the encoder".
  import json
  old = json.loads(preset("small").to_json())
  del old["decoder_res_blocks"]
  assert MagvitConfig.from_json(json.dumps(old)).decoder_blocks == 1
