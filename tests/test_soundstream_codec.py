"""SoundStream codec: the frame rule (2.125 s -> 106 frames), causal convolutions against naive
loops, encoder/decoder causality, and the paper preset's shapes (eval_shape only)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.soundstream.config import PRESETS, preset
from vp_jax.models.soundstream.conv import CausalConv1d, CausalConvTranspose1d
from vp_jax.models.soundstream.model import SoundStream, init_model


@pytest.fixture(autouse=True)
def _lazy_sharding():
  """Modules built outside a mesh: no eager sharding of the annotated parameters."""
  with nnx.use_eager_sharding(False):
    yield


SMALL = PRESETS["small"]


class Jitted:
  """encode / decode / encoder of a model, jitted (eager op-by-op calls are slow on CPU)."""

  def __init__(self, model):
    graphdef, state = nnx.split(model)
    call = lambda name: jax.jit(lambda st, x: getattr(nnx.merge(graphdef, st), name)(x))
    fns = {n: call(n) for n in ("encode", "decode", "encoder")}
    self.encode, self.decode, self.encoder = (
        (lambda x, f=fns[n]: f(state, x)) for n in ("encode", "decode", "encoder"))


@pytest.fixture(scope="module")
def small_model():
  return Jitted(init_model(SMALL))


def test_frame_rule():
  assert SMALL.hop_length == 320 and SMALL.frame_rate == 50.0
  assert SMALL.num_frames(34_000) == 106          # 2.125 s
  assert SMALL.num_frames(33_920) == 106 and SMALL.num_frames(33_919) == 105
  assert SMALL.num_frames(319) == 0 and SMALL.num_frames(320) == 1
  assert SMALL.num_levels * SMALL.num_frames(34_000) == 424
  with pytest.raises(ValueError, match="num_samples"):
    SMALL.num_frames(-1)


def test_presets_validate():
  with pytest.raises(ValueError, match="Unknown SoundStream preset"):
    preset("huge")
  with pytest.raises(ValueError, match="channel_mults"):
    preset("small", strides=(2, 4, 5))
  with pytest.raises(ValueError, match="quantizer_dropout"):
    preset("small", quantizer_dropout=1.5)


def _naive_conv(x, w, b, stride, dilation, pad):  # x [N, Cin], w [K, Cin, Cout]
  k = w.shape[0]
  xp = np.concatenate([np.zeros((pad, x.shape[1])), x])
  out = []
  for t in range((len(xp) - (k - 1) * dilation - 1) // stride + 1):
    window = xp[t * stride + np.arange(k) * dilation]             # [K, Cin]
    out.append(np.einsum("kc,kco->o", window, w) + b)
  return np.array(out)


@pytest.mark.parametrize("n,kernel,stride,dilation", [(37, 7, 1, 3), (41, 10, 5, 1),
                                                      (320, 16, 8, 1), (9, 4, 2, 1)])
def test_causal_conv_matches_naive_loop(n, kernel, stride, dilation):
  conv = CausalConv1d(3, 5, kernel, stride=stride, dilation=dilation, rngs=nnx.Rngs(0))
  conv.bias[...] = jnp.arange(5.0)
  x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
  got = np.asarray(conv(jnp.asarray(x)[None]))[0]
  want = _naive_conv(x, np.asarray(conv.kernel[...]), np.asarray(conv.bias[...]), stride, dilation,
                     conv.pad)
  assert got.shape == (n // stride, 5)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_transposed_conv_matches_naive_overlap_add():
  stride, t = 4, 6
  conv = CausalConvTranspose1d(3, 2, stride, rngs=nnx.Rngs(1))
  x = np.random.default_rng(1).normal(size=(t, 3)).astype(np.float32)
  w = np.asarray(conv.kernel[...])                               # [Cin, 2S, Cout]
  full = np.zeros(((t + 1) * stride, 2))
  for i in range(t):                                             # frame i writes [iS, iS + 2S)
    full[i * stride:i * stride + 2 * stride] += np.einsum("c,cko->ko", x[i], w)
  got = np.asarray(conv(jnp.asarray(x)[None]))[0]
  assert got.shape == (t * stride, 2)
  np.testing.assert_allclose(got, full[:t * stride], atol=1e-4)  # right overhang dropped


def test_clip_encodes_to_106_frames_and_decodes_to_whole_frames(small_model):
  wave = 0.5 * np.sin(np.arange(34_000) * 0.05)[None].astype(np.float32)
  codes = small_model.encode(jnp.asarray(np.repeat(wave, 2, 0)))
  assert codes.shape == (2, 4, 106) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < 1024
  out = small_model.decode(codes)
  assert out.shape == (2, 106 * 320)


def test_encoder_is_causal(small_model):
  """Changing samples from 320 * (t + 1) on leaves codes 0..t unchanged (and changes later ones)."""
  rng = np.random.default_rng(0)
  wave = (0.3 * rng.normal(size=(1, 6400))).astype(np.float32)
  t = 9
  other = wave.copy()
  other[:, 320 * (t + 1):] = 0.3 * rng.normal(size=(1, 6400 - 320 * (t + 1)))
  latents = [np.asarray(small_model.encoder(jnp.asarray(w))) for w in (wave, other)]
  codes = [np.asarray(small_model.encode(jnp.asarray(w))) for w in (wave, other)]
  np.testing.assert_array_equal(latents[0][:, :t + 1], latents[1][:, :t + 1])
  np.testing.assert_array_equal(codes[0][:, :, :t + 1], codes[1][:, :, :t + 1])
  assert np.abs(latents[0][:, t + 1:] - latents[1][:, t + 1:]).max() > 1e-3


def test_decoder_is_causal(small_model):
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 1024, size=(1, 4, 12))
  changed = codes.copy()
  changed[:, :, 7:] = rng.integers(0, 1024, size=(1, 4, 5))
  a, b = (np.asarray(small_model.decode(jnp.asarray(c))) for c in (codes, changed))
  np.testing.assert_array_equal(a[:, :7 * 320], b[:, :7 * 320])
  assert np.abs(a[:, 7 * 320:] - b[:, 7 * 320:]).max() > 0


def test_shorter_than_one_frame_is_an_error(small_model):
  with pytest.raises(ValueError, match="shorter than one frame"):
    nnx.eval_shape(lambda: SoundStream(SMALL, rngs=nnx.Rngs(0))).encode(jnp.zeros((1, 300)))


def test_paper_preset_shapes_without_allocating():
  cfg = PRESETS["paper"]
  model = nnx.eval_shape(lambda: SoundStream(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  codes = jax.eval_shape(lambda s, w: nnx.merge(graphdef, s).encode(w), state,
                         jax.ShapeDtypeStruct((2, 34_000), jnp.float32))
  assert codes.shape == (2, 4, 106)
  wave = jax.eval_shape(lambda s, c: nnx.merge(graphdef, s).decode(c), state, codes)
  assert wave.shape == (2, 33_920)
  _, params, _ = nnx.split(model, nnx.Param, ...)
  sizes = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.to_pure_dict(params)[k]))
           for k in ("encoder", "decoder")}
  # C=32, D=512: SEANet encoder and decoder are ~8-9M parameters each (SoundStream reports 8.4M
  # for its encoder + decoder at C=32 with D=256 ... the larger D adds the head convolutions).
  assert 5e6 < sizes["encoder"] < 2e7 and 5e6 < sizes["decoder"] < 2e7, sizes
  assert model.quantizer.codebook.shape == (4, 1024, 512)
