"""VideoTokenizer API: shapes, pixel ranges, sharded batches, COMMIT, bad input, load from a
trainer workdir."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vp_jax.models.magvit import preset, synthetic
from vp_jax.models.magvit.tokenizer import create_tokenizer
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer

TINY = preset("tiny")


@pytest.fixture(scope="module")
def tok():
  return VideoTokenizer.from_module(create_tokenizer(TINY, 0))


@pytest.fixture(scope="module")
def clips():
  return synthetic.moving_shapes_batch(0, 0, 3, 9, 16, 16)   # uint8 [3, 9, 16, 16, 3]


def test_encode_decode_shapes_and_ranges(tok, clips):
  assert tok.latent_shape(9, 16, 16) == (3, 2, 2)
  assert tok.frame_shape(3, 2, 2) == (9, 16, 16)
  ids = tok.encode(clips)                     # batch 3 over 8 devices: padded and sliced back
  assert ids.shape == (3, 3, 2, 2) and ids.dtype == jnp.int32
  assert int(ids.min()) >= 0 and int(ids.max()) < 2 ** 18
  # uint8 and float [0, 1] inputs are the same pixels.
  np.testing.assert_array_equal(np.asarray(tok.encode(clips.astype(np.float32) / 255.0)),
                                np.asarray(ids))
  # The batch is split over the data axis and does not change per-row results.
  np.testing.assert_array_equal(np.asarray(tok.encode(clips[1:2])), np.asarray(ids[1:2]))
  frames = tok.decode(ids)
  assert frames.shape == (3, 9, 16, 16, 3) and frames.dtype == jnp.float32
  assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
  image_ids = tok.encode(clips[:, :1])
  assert image_ids.shape == (3, 1, 2, 2)
  np.testing.assert_array_equal(np.asarray(image_ids[:, 0]), np.asarray(ids[:, 0]))
  assert tok.decode(image_ids).shape == (3, 1, 16, 16, 3)


def test_commit_encode(tok, clips):
  visible = np.ones(clips.shape[:4], bool)
  visible[:, :, 4:12, 4:12] = False           # central inpainting mask
  cond, target = tok.commit_encode(clips, visible)
  np.testing.assert_array_equal(np.asarray(target), np.asarray(tok.encode(clips)))
  masked = np.where(visible[..., None], clips / 255.0, 0.5).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(cond), np.asarray(tok.encode(masked)))
  assert np.any(np.asarray(cond) != np.asarray(target))
  np.testing.assert_array_equal(np.asarray(tok.commit_condition(clips, visible)), np.asarray(cond))
  all_visible = tok.commit_encode(clips, np.ones(clips.shape[:4], bool))
  np.testing.assert_array_equal(np.asarray(all_visible[0]), np.asarray(all_visible[1]))
  with pytest.raises(ValueError, match="visible: shape"):
    tok.commit_encode(clips, visible[:, :1])
  with pytest.raises(ValueError, match="visible: dtype"):
    tok.commit_encode(clips, visible.astype(np.float32))
  with pytest.raises(ValueError, match="visible: shape"):
    tok.commit_condition(clips, visible[:, :, :8])


@pytest.mark.parametrize("bad,match", [
    (np.zeros((9, 16, 16, 3), np.uint8), "rank 5"),
    (np.zeros((1, 9, 16, 16, 4), np.uint8), "rank 5, RGB"),
    (np.zeros((1, 8, 16, 16, 3), np.uint8), "T=8"),
    (np.zeros((1, 9, 12, 16, 3), np.uint8), "multiples of 8"),
    (np.full((1, 9, 16, 16, 3), -0.5, np.float32), r"expected \[0, 1\]"),
    (np.full((1, 9, 16, 16, 3), 3.0, np.float32), r"expected \[0, 1\]"),
    (np.zeros((1, 9, 16, 16, 3), np.int32), "dtype int32"),
])
def test_bad_frames(tok, bad, match):
  with pytest.raises(ValueError, match=match):
    tok.encode(bad)


def test_bad_ids(tok):
  with pytest.raises(ValueError, match="ids: expected"):
    tok.decode(np.zeros((3, 2, 2), np.int32))
  with pytest.raises(ValueError, match="ids: values span"):
    tok.decode(np.full((1, 1, 2, 2), 2 ** 18, np.int32))
  with pytest.raises(ValueError, match="ids: dtype"):
    tok.decode(np.zeros((1, 1, 2, 2), np.float32))


def test_cpu_convs_onednn_and_xla_run_the_same_function(tok, clips):
  """The default (cpu_convs="onednn") compiles encode with oneDNN's convolutions where XLA:CPU has
  them, batch-sharded over the 8 devices; "xla" keeps XLA's. The same codes and frames."""
  from vp_jax.nn import onednn_conv
  xla = VideoTokenizer.from_module(create_tokenizer(TINY, 0), cpu_convs="xla")
  assert tok.mesh.size == 8
  x = jax.device_put(jnp.zeros((8, 5, 16, 16, 3), jnp.uint8),
                     NamedSharding(tok.mesh, PartitionSpec(tok._batch_axes())))
  texts = {}
  for name, t in (("onednn", tok), ("xla", xla)):
    with jax.set_mesh(t.mesh):
      texts[name] = t._encode.lower(t._params, x).compile().as_text()
  assert texts["xla"].count("__onednn$convolution") == 0
  calls = [line for line in texts["onednn"].splitlines()
           if "custom-call(" in line and "__onednn$convolution" in line]
  assert bool(calls) == onednn_conv.available()
  # Each device convolves its own clip (shard_map), not the gathered batch of 8.
  assert all(line.split("= f32[")[1].startswith("1,") for line in calls)
  assert "all-gather" not in texts["onednn"]
  ids = tok.encode(clips)
  np.testing.assert_array_equal(np.asarray(xla.encode(clips)), np.asarray(ids))
  np.testing.assert_allclose(np.asarray(xla.decode(ids)), np.asarray(tok.decode(ids)),
                             rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="cpu_convs='mkl'; use one of"):
    VideoTokenizer.from_module(create_tokenizer(TINY, 0), cpu_convs="mkl")


def test_cpu_convs_onednn_bf16_rounds_only_the_conv_operands(tok, clips):
  """cpu_convs="onednn_bf16": bfloat16 conv operands where the CPU runs them fast (else the float32
  function). Codes differ only in latent bits near 0 (measured on this untrained model: 0.5% of
  bits, 8% of the 18-bit ids) and frames by < 0.01; `describe()` records the choice."""
  from vp_jax.nn import onednn_conv
  bf16 = VideoTokenizer.from_module(create_tokenizer(TINY, 0), cpu_convs="onednn_bf16")
  assert bf16.describe()["cpu_convs"] == "onednn_bf16" and "cpu_convs" not in tok.describe()
  assert bf16.describe()["cpu_convs_revision"] == 2 and "cpu_convs_revision" not in tok.describe()
  x = jax.device_put(jnp.zeros((8, 5, 16, 16, 3), jnp.uint8),
                     NamedSharding(bf16.mesh, PartitionSpec(bf16._batch_axes())))
  with jax.set_mesh(bf16.mesh):
    text = bf16._encode.lower(bf16._params, x).compile().as_text()
  calls = [line for line in text.splitlines()
           if "custom-call(" in line and "__onednn$convolution" in line]
  assert bool(calls) == onednn_conv.available()
  assert all(("bf16[1," in line) == onednn_conv.available("bfloat16") for line in calls)
  ids, ids16 = np.asarray(tok.encode(clips)), np.asarray(bf16.encode(clips))
  bits = lambda i: (i[..., None] >> np.arange(TINY.embedding_dim)) & 1  # noqa: E731
  flipped = float(np.mean(bits(ids) != bits(ids16)))
  frames, frames16 = np.asarray(tok.decode(ids)), np.asarray(bf16.decode(ids))
  diff = float(np.max(np.abs(frames - frames16)))
  assert frames16.dtype == np.float32
  if onednn_conv.available("bfloat16"):
    assert 0 < flipped < 0.02 and 0 < diff < 0.02, (flipped, diff)
  else:
    assert flipped == 0 and diff < 1e-5


def test_cpu_convs_onednn_bf16_rounds_the_kernels_once_to_the_same_result(clips):
  """The onednn_bf16 tokenizer holds its conv kernels in bfloat16 where bfloat16 operands run
  (`cpu_compile.conv_operand_params`): its jitted encode and decode give exactly the ids and
  frames they give from the float32 weights, which they round on every call."""
  from vp_jax.nn import onednn_conv
  module = create_tokenizer(TINY, 0)
  bf16 = VideoTokenizer.from_module(module, cpu_convs="onednn_bf16")
  kernel = bf16._params["decoder"]["conv_out"]["kernel"]
  assert kernel.dtype == (jnp.bfloat16 if onednn_conv.available("bfloat16") else jnp.float32)
  assert bf16._params["decoder"]["conv_out"]["bias"].dtype == jnp.float32
  f32_params = nnx.to_pure_dict(nnx.state(module))
  x = bf16._shard_batch(jnp.asarray(clips[:1]))
  with jax.set_mesh(bf16.mesh):
    ids, ids_f32 = bf16._encode(bf16._params, x), bf16._encode(f32_params, x)
    frames, frames_f32 = bf16._decode(bf16._params, ids), bf16._decode(f32_params, ids)
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(ids_f32))
  np.testing.assert_array_equal(np.asarray(frames), np.asarray(frames_f32))


def test_mismatched_params():
  with pytest.raises(ValueError, match="VideoTokenizer: param"):
    VideoTokenizer(preset("tiny", filters=16),
                   nnx.to_pure_dict(nnx.state(create_tokenizer(TINY, 0))))


def test_check_frames_directly():
  from vp_jax.tokenizers.video_tokenizer import check_frames
  u8 = np.zeros((1, 1, 8, 8, 3), np.uint8)
  assert check_frames(u8) is u8                    # uint8 passes through untouched
  nested = [[[[[0.25, 0.5, 1.0]] * 8] * 8]]        # a nested list becomes an array
  out = check_frames(nested)
  assert isinstance(out, np.ndarray) and out.shape == (1, 1, 8, 8, 3)
  np.testing.assert_allclose(out[0, 0, 3, 5], [0.25, 0.5, 1.0])
  with pytest.raises(ValueError, match="^condition: expected"):   # the caller's name is used
    check_frames(np.zeros((8, 8, 3), np.float32), "condition")
  nan = np.full((1, 1, 8, 8, 3), 0.5, np.float32)
  nan[0, 0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match=r"clip: float values span \[nan"):
    check_frames(nan, "clip")
  with pytest.raises(ValueError, match="frames: dtype bool"):
    check_frames(np.zeros((1, 1, 8, 8, 3), bool))
