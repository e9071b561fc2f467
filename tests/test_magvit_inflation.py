"""Inflation: 2D image model -> causal 3D video model; the first frame is reproduced exactly."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit import preset, synthetic
from vp_jax.models.magvit.inflation import (grow_decoder_blocks, inflate_kernel, inflate_params,
                                            inflate_tokenizer, temporal_tap_update_scale,
                                            temporal_upsample_indices, tie_temporal_subframes)
from vp_jax.models.magvit.tokenizer import create_tokenizer


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_inflate_kernel():
  k = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(1, 2, 2, 3, 4)
  out = inflate_kernel(k, 3)
  assert out.shape == (3, 2, 2, 3, 4)
  np.testing.assert_array_equal(out[2], k[0])
  assert not np.any(out[:2])
  with pytest.raises(ValueError, match="kernel"):
    inflate_kernel(np.zeros((3, 2, 2, 3, 4)), 3)


@pytest.mark.parametrize("subframes", ["repeat", "blend"])
def test_inflated_video_model_reproduces_image_model(subframes):
  image_cfg, video_cfg = preset("tiny_image"), preset("tiny", temporal_subframe_init=subframes)
  image = create_tokenizer(image_cfg, 3)
  # Make the image model's norms/AdaGN non-trivial so the check covers every parameter kind.
  params = jax.tree.map(lambda x: x + 0.05 * jnp.sin(jnp.arange(x.size).reshape(x.shape)),
                        _params(image))
  nnx.update(image, params)
  video = create_tokenizer(video_cfg, 4)
  untied = create_tokenizer(video_cfg, 4)
  inflated = inflate_tokenizer(_params(image), _params(video), video_cfg)
  n5 = [x for x in jax.tree.leaves(inflated) if x.ndim == 5]
  assert n5 and all(x.shape[0] in (1, 3) for x in n5)
  assert any(x.shape[0] == 3 for x in n5)
  nnx.update(video, inflated)
  nnx.update(untied, inflate_params(_params(image), _params(untied)))

  still = synthetic.moving_shapes_batch(0, 0, 2, 1, 16, 16)                  # [2, 1, 16, 16, 3]
  static = jnp.asarray(np.repeat(still, 9, axis=1), jnp.float32) / 127.5 - 1  # static video
  first = static[:, :1]
  run = nnx.jit(lambda m, x: (m.encoder(x), m(x)[0]))
  (z_img, out_img), (z_vid, out_vid) = run(image, first), run(video, static)
  np.testing.assert_allclose(np.asarray(z_vid[:, 0]), np.asarray(z_img[:, 0]), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(z_vid[:, 0] > 0), np.asarray(z_img[:, 0] > 0))
  np.testing.assert_allclose(np.asarray(out_vid[:, 0]), np.asarray(out_img[:, 0]), atol=1e-4)
  # On a static video every latent frame equals the image's latent (weights only see frame t), and
  # with the upsamplers' sub-frames tied every decoded frame equals the image's decoding.
  np.testing.assert_allclose(np.asarray(z_vid[:, 2]), np.asarray(z_img[:, 0]), atol=1e-4)
  np.testing.assert_allclose(np.asarray(out_vid),
                             np.broadcast_to(np.asarray(out_img[:, :1]), out_vid.shape), atol=1e-4)
  if subframes == "blend":
    return                                   # the untied model is the same for both modes
  # Without the tie only the last sub-frame of each temporal upsampling is the image model's:
  # frames 0, 4 and 8 match, frames 1-3 and 5-7 come from untrained channels.
  out_untied = np.asarray(run(untied, static)[1])
  err = np.max(np.abs(out_untied - np.asarray(out_img[:, :1])), axis=(0, 2, 3, 4))   # [T]
  assert np.all(err[[0, 4, 8]] < 1e-4) and np.all(err[[1, 2, 3, 5, 6, 7]] > 1e-2), err


def test_tie_temporal_subframes():
  cfg = preset("tiny")
  assert temporal_upsample_indices(cfg) == [0, 1]            # the two coarsest: time x2 each
  assert temporal_upsample_indices(preset("tiny", temporal_downsample=(True, False, False))) == [2]
  params = _params(create_tokenizer(cfg, 0))
  tied = tie_temporal_subframes(params, cfg)
  for i in (0, 1):
    for name in ("kernel", "bias"):
      w, t = np.asarray(params["decoder"]["ups"][i]["conv"][name]), \
          np.asarray(tied["decoder"]["ups"][i]["conv"][name])
      c4 = w.shape[-1] // 2                                  # 4 C channels per sub-frame
      np.testing.assert_array_equal(t[..., c4:], w[..., c4:])
      np.testing.assert_array_equal(t[..., :c4], w[..., c4:])
  np.testing.assert_array_equal(np.asarray(tied["decoder"]["ups"][2]["conv"]["kernel"]),
                                np.asarray(params["decoder"]["ups"][2]["conv"]["kernel"]))
  same = [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
          zip(jax.tree.leaves(params["encoder"]), jax.tree.leaves(tied["encoder"]))]
  assert all(same)


def test_blend_subframes_interpolate_between_frames():
  """'blend' after inflation (weights in the last temporal tap): each temporal upsampling's
  in-between output frame is exactly the mean of its neighbours; 'repeat' copies the later one."""
  cfg = preset("tiny", temporal_subframe_init="blend")
  tok = create_tokenizer(cfg, 0)
  params = _params(tok)
  for i in temporal_upsample_indices(cfg):                 # emulate inflation: earlier taps zero
    k = np.asarray(params["decoder"]["ups"][i]["conv"]["kernel"]).copy()
    k[:-1] = 0
    params["decoder"]["ups"][i]["conv"]["kernel"] = k
    params["decoder"]["ups"][i]["conv"]["bias"] = np.linspace(-1, 1, k.shape[-1], dtype=np.float32)
  cin = params["decoder"]["ups"][0]["conv"]["kernel"].shape[3]
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 4, cin)), jnp.float32)
  outs = {}
  for mode in ("blend", "repeat"):
    nnx.update(tok, tie_temporal_subframes(params, preset("tiny", temporal_subframe_init=mode)))
    outs[mode] = np.asarray(tok.decoder.ups[0](x))              # [2, 5, 8, 8, C]
  blend, repeat = outs["blend"], outs["repeat"]
  assert blend.shape[1] == 5 and np.std(blend) > 0.1
  np.testing.assert_allclose(blend[:, 1], (blend[:, 0] + blend[:, 2]) / 2, atol=1e-5)
  np.testing.assert_allclose(blend[:, 3], (blend[:, 2] + blend[:, 4]) / 2, atol=1e-5)
  np.testing.assert_array_equal(blend[:, ::2], repeat[:, ::2])  # the frames of the trained channels
  np.testing.assert_array_equal(repeat[:, 1], repeat[:, 2])
  assert np.abs(blend[:, 1] - blend[:, 2]).max() > 0.1
  tied = tie_temporal_subframes(params, cfg)["decoder"]["ups"][0]["conv"]
  c4 = tied["kernel"].shape[-1] // 2
  np.testing.assert_array_equal(tied["kernel"][1, ..., :c4], tied["kernel"][2, ..., c4:] / 2)
  np.testing.assert_array_equal(tied["bias"][:c4], tied["bias"][c4:])
  # An unknown mode fails in both checks; replace() builds the config without preset()'s validate.
  hold = dataclasses.replace(cfg, temporal_subframe_init="hold")
  for check in (hold.validate, lambda: tie_temporal_subframes(params, hold)):
    with pytest.raises(ValueError, match=r"temporal_subframe_init='hold'.*\('repeat', 'blend'\)"):
      check()
  with pytest.raises(ValueError, match="upsample_kernel=1"):
    preset("tiny", temporal_subframe_init="blend", upsample_kernel=1).validate()
  with pytest.raises(ValueError, match="'blend' needs temporal taps"):
    tie_temporal_subframes(_params(create_tokenizer(preset("tiny_image"), 0)), cfg)


def test_inflate_params_errors():
  image = _params(create_tokenizer(preset("tiny_image"), 0))
  other = _params(create_tokenizer(preset("tiny", filters=16), 0))
  with pytest.raises(ValueError, match="only temporal kernel size may differ"):
    inflate_params(image, other)
  with pytest.raises(ValueError, match="the image model has"):
    inflate_params({"encoder": image["encoder"]}, image)


def test_inflation_with_a_deeper_video_decoder_starts_as_the_image_model():
  """decoder_res_blocks=2 over a 1-block image model: the new blocks are identities, so the grown,
  inflated model decodes every frame of a static video as the image model decodes the image."""
  image_cfg, video_cfg = preset("tiny_image"), preset("tiny", decoder_res_blocks=2)
  image = create_tokenizer(image_cfg, 3)
  params = jax.tree.map(lambda x: x + 0.05 * jnp.sin(jnp.arange(x.size).reshape(x.shape)),
                        _params(image))
  nnx.update(image, params)
  video = create_tokenizer(video_cfg, 4)
  template = _params(video)
  assert len(template["decoder"]["blocks"]) == 8 and len(template["decoder"]["mid"]) == 2
  assert len(template["encoder"]["blocks"]) == len(params["encoder"]["blocks"])   # encoder as is
  grown = inflate_tokenizer(params, template, video_cfg, image_decoder_blocks=1)
  # Level l's trained block is its first; the appended one is the template's with conv2 zeroed.
  blocks, fresh = grown["decoder"]["blocks"], template["decoder"]["blocks"]
  for level in range(4):
    old, new = params["decoder"]["blocks"][level], blocks[2 * level + 1]
    np.testing.assert_array_equal(np.asarray(blocks[2 * level]["norm1"]["scale"]),
                                  np.asarray(old["norm1"]["scale"]))
    assert not np.any(np.asarray(new["conv2"]["kernel"]))
    assert not np.any(np.asarray(new["conv2"]["bias"]))
    np.testing.assert_array_equal(np.asarray(new["conv1"]["kernel"]),
                                  np.asarray(fresh[2 * level + 1]["conv1"]["kernel"]))
  nnx.update(video, grown)
  still = synthetic.moving_shapes_batch(0, 0, 2, 1, 16, 16)
  static = jnp.asarray(np.repeat(still, 5, axis=1), jnp.float32) / 127.5 - 1
  run = nnx.jit(lambda m, x: m(x)[0])
  out_img, out_vid = np.asarray(run(image, static[:, :1])), np.asarray(run(video, static))
  assert np.std(out_img) > 0.05                                # a non-trivial decoding
  np.testing.assert_allclose(out_vid, np.broadcast_to(out_img, out_vid.shape), atol=1e-4)


def test_identity_block_passes_its_input_and_still_trains():
  """A grown block (conv2 zeroed) is x -> x, and conv2 gets a gradient, so the block can learn."""
  from vp_jax.models.magvit.blocks import ResBlock
  from vp_jax.models.magvit.inflation import _identity_block
  with nnx.use_eager_sharding(False):
    block = ResBlock(8, 8, 4, 3, rngs=nnx.Rngs(0))
  nnx.update(block, _identity_block(_params(block)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 4, 4, 8)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))
  grads = nnx.to_pure_dict(nnx.grad(lambda b: jnp.sum(jnp.sin(b(x))))(block))
  assert np.abs(np.asarray(grads["conv2"]["kernel"])).max() > 1e-3
  assert not np.any(np.asarray(grads["conv1"]["kernel"]))     # conv1 waits for conv2 to move


def test_grow_decoder_blocks_errors():
  small = _params(create_tokenizer(preset("tiny_image"), 0))
  deep = _params(create_tokenizer(preset("tiny_image", decoder_res_blocks=2), 0))
  with pytest.raises(ValueError, match="cannot shrink"):
    grow_decoder_blocks(deep, 2, small, 1)
  with pytest.raises(ValueError, match="expected 12 and 3"):
    grow_decoder_blocks(small, 1, deep, 3)
  same = grow_decoder_blocks(small, 1, small, 1)
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(small)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_temporal_tap_update_scale_multiplies_only_the_earlier_slices():
  scale = temporal_tap_update_scale(5.0)
  factor = scale("['tokenizer']['encoder']['conv_in']['kernel']", (3, 3, 3, 3, 8))
  assert factor.shape == (3, 1, 1, 1, 1)
  np.testing.assert_array_equal(factor.ravel(), [5.0, 5.0, 1.0])
  assert scale("['tokenizer']['encoder']['conv_in']['kernel']", (1, 3, 3, 3, 8)) is None
  assert scale("['tokenizer']['encoder']['conv_in']['bias']", (8,)) is None
  assert scale("['tokenizer']['lfq']['x']", (3, 4)) is None
  with pytest.raises(ValueError, match="temporal_tap_lr_multiplier=0.0"):
    preset("tiny", temporal_tap_lr_multiplier=0.0).validate()
