"""MAGVIT-v2 building blocks on their own: the causal 3D convolution (causality, temporal stride,
inflation identity), group norm's affine, the residual block, strided downsampling and
depth-to-space upsampling (shapes and causality)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit import blocks
from vp_jax.models.magvit.conv import CausalConv3d


def _x(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _module(cls, *args, **kwargs):
  with nnx.use_eager_sharding(False):
    return cls(*args, **kwargs, rngs=nnx.Rngs(0))


def _changed_frames(f, x, t):
  """Output frames of f that change when input frame t (and later ones) change."""
  y0 = np.asarray(f(x))
  y1 = np.asarray(f(x.at[:, t:].add(1.0)))
  return [i for i in range(y0.shape[1]) if np.max(np.abs(y0[:, i] - y1[:, i])) > 1e-5]


def test_causal_conv3d_is_causal():
  conv = _module(CausalConv3d, 3, 4, (3, 3, 3))
  x = _x((1, 6, 5, 5, 3))
  assert conv(x).shape == (1, 6, 5, 5, 4)
  for t in range(6):
    assert _changed_frames(conv, x, t) == list(range(t, 6))


def test_causal_conv3d_temporal_stride():
  """Stride 2 in time: 1 + 2k frames -> 1 + k; output frame j sees input frames <= 2j."""
  conv = _module(CausalConv3d, 3, 4, (3, 3, 3), (2, 2, 2))
  x = _x((2, 9, 8, 8, 3))
  assert conv(x).shape == (2, 5, 4, 4, 4)
  assert _changed_frames(conv, x, 3) == [2, 3, 4]       # frame 3 first reaches output 2 (= 4 // 2)
  assert _changed_frames(conv, x, 4) == [2, 3, 4]
  assert _changed_frames(conv, x, 5) == [3, 4]


def test_causal_conv3d_last_slice_is_the_2d_conv():
  """A kernel whose only nonzero temporal slice is the last computes the 2D conv of each frame
  (plus bias): the identity inflation relies on."""
  conv = _module(CausalConv3d, 3, 4, (3, 3, 3))
  k2 = np.asarray(_x((3, 3, 3, 4), seed=1))
  kernel = np.zeros((3, 3, 3, 3, 4), np.float32)
  kernel[-1] = k2
  conv.kernel[...] = jnp.asarray(kernel)
  conv.bias[...] = jnp.asarray([0.5, -1.0, 0.0, 2.0])
  x = _x((2, 4, 6, 6, 3), seed=2)
  want = jax.lax.conv_general_dilated(x.reshape(8, 6, 6, 3), jnp.asarray(k2), (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  want = np.asarray(want).reshape(2, 4, 6, 6, 4) + np.array([0.5, -1.0, 0.0, 2.0])
  np.testing.assert_allclose(np.asarray(conv(x)), want, rtol=1e-4, atol=1e-4)
  zero = _module(CausalConv3d, 3, 4, (3, 3, 3), zero_init=True)
  assert float(jnp.max(jnp.abs(zero(x)))) == 0.0


def test_group_norm_module_affine():
  with nnx.use_eager_sharding(False):
    norm = blocks.GroupNorm(8, 4)
  scale, bias = np.arange(1.0, 9.0, dtype=np.float32), np.linspace(-1, 1, 8, dtype=np.float32)
  norm.scale[...], norm.bias[...] = jnp.asarray(scale), jnp.asarray(bias)
  x = _x((2, 3, 4, 4, 8))
  np.testing.assert_allclose(np.asarray(norm(x)),
                             np.asarray(blocks.group_norm(x, 4)) * scale + bias, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("features_out", [8, 16])
def test_res_block(features_out):
  """With the second conv zeroed the block is its skip path: the identity at equal widths, the
  1x1x1 skip conv otherwise; it is causal in time."""
  block = _module(blocks.ResBlock, 8, features_out, 4, 3)
  x = _x((1, 5, 4, 4, 8))
  y = block(x)
  assert y.shape == (1, 5, 4, 4, features_out)
  assert _changed_frames(block, x, 2) == [2, 3, 4]
  block.conv2.kernel[...] = jnp.zeros_like(block.conv2.kernel[...])
  skip = x if features_out == 8 else block.skip(x)
  assert (block.skip is None) == (features_out == 8)
  np.testing.assert_allclose(np.asarray(block(x)), np.asarray(skip), atol=1e-6)
  assert float(jnp.max(jnp.abs(y - skip))) > 1e-3       # the residual branch did contribute


@pytest.mark.parametrize("temporal", [True, False])
def test_downsample(temporal):
  down = _module(blocks.Downsample, 4, 6, temporal, 3)
  x = _x((1, 9, 8, 8, 4))
  assert down(x).shape == (1, 5 if temporal else 9, 4, 4, 6)
  assert _changed_frames(down, x, 5) == ([3, 4] if temporal else [5, 6, 7, 8])


@pytest.mark.parametrize("temporal,kernel", [(True, 3), (True, 1), (False, 3)])
def test_upsample(temporal, kernel):
  """conv then depth-to-space: 1 + k frames -> 1 + 2k, H and W doubled; latent frame j reaches
  output frames >= 2j - 1 only."""
  up = _module(blocks.Upsample, 6, 4, temporal, 3, kernel=kernel)
  x = _x((1, 3, 4, 4, 6))
  y = up(x)
  assert y.shape == (1, 5 if temporal else 3, 8, 8, 4)
  np.testing.assert_allclose(np.asarray(y),
                             np.asarray(blocks.depth_to_space(up.conv(x), temporal, 4)), atol=1e-6)
  assert up.conv.kernel[...].shape == ((3, 3, 3) if kernel == 3 else (1, 1, 1)) + (
      6, 4 * 4 * (2 if temporal else 1))
  assert _changed_frames(up, x, 1) == ([1, 2, 3, 4] if temporal else [1, 2])
  assert _changed_frames(up, x, 2) == ([3, 4] if temporal else [2])
