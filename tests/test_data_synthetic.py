"""Synthetic dataset: determinism, captions vs labels, exact flow/depth, soundtrack, formats."""
import json

import numpy as np
import pytest

from vp_jax.data import conditions, formats
from vp_jax.data.synthetic import SceneConfig, SyntheticConfig, SyntheticVideos, flat_labels
from vp_jax.data.synthetic import captions, render, scene as scene_lib, sound

SMALL = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=64, seed=3)


def _digest(ex):
  return (ex["frames"].tobytes(), ex["depth"].tobytes(), ex["flow"].tobytes(),
          ex["audio"].tobytes(), ex["caption"], json.dumps(ex["labels"], sort_keys=True))


def test_same_seed_identical_bytes_any_order_other_seed_differs():
  a = SyntheticVideos(SMALL)
  b = SyntheticVideos(SMALL)
  forward = [_digest(a[i]) for i in range(6)]
  backward = [_digest(b[i]) for i in reversed(range(6))][::-1]
  assert forward == backward
  c = SyntheticVideos(SyntheticConfig(resolution="32x32", num_frames=17, num_examples=64, seed=4))
  assert sum(_digest(c[i])[0] == forward[i][0] for i in range(6)) == 0
  v = SyntheticVideos(SMALL, "validation")
  assert _digest(v[0])[0] != forward[0][0]
  assert len(v) == 8 and len(a) == 64


@pytest.mark.parametrize("resolution,frames,hw", [
    ("128x128", 17, (128, 128)), ("128x224", 17, (224, 128)), ("32x32", 41, (32, 32)),
    ("64x64", 1, (64, 64))])
def test_shapes_per_format(resolution, frames, hw):
  ex = SyntheticVideos(SyntheticConfig(resolution=resolution, num_frames=frames,
                                       num_examples=2))[1]
  t = frames
  assert ex["frames"].shape == (t, *hw, 3) and ex["frames"].dtype == np.uint8
  assert ex["depth"].shape == (t, *hw) and ex["flow"].shape == (t, *hw, 2)
  if frames == 1:
    assert ex["audio"].shape == (0,) and not ex["has_audio"]
    assert ex["labels"]["kind"] == "image"
    assert all(o["direction"] == "none" for o in ex["labels"]["objects"])
  else:
    # 17 frames at 8 fps = 2.125 s = 34,000 samples; 41 -> 5.125 s = 82,000.
    assert ex["audio"].shape == ({17: 34_000, 41: 82_000}[frames],)
    assert ex["has_audio"]


def test_portrait_is_width_128_height_224():
  assert formats.resolution("128x224") == (224, 128)
  with pytest.raises(ValueError, match="unknown"):
    formats.resolution("100x100")
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    SyntheticConfig(num_frames=16)


def test_captions_agree_with_labels_over_many_examples():
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=300, seed=11,
                        scene=SceneConfig(max_objects=2))
  videos = SyntheticVideos(cfg)
  seen = {"bounce": 0, "spin": 0, "camera": 0, "still": 0, "two": 0}
  for i in range(len(videos)):
    scene, _ = videos.scene(i)
    labels = videos.labels(scene)
    caption = videos.caption(i)
    assert captions.caption_mentions(caption, labels) == [], (caption, labels)
    objs = labels["objects"]
    seen["bounce"] += any(o["bounces"] for o in objs)
    seen["spin"] += any(o["rotation"] != "none" for o in objs)
    seen["camera"] += labels["camera"] != "none"
    seen["still"] += any(o["direction"] == "none" for o in objs)
    seen["two"] += len(objs) == 2
  # Every kind of event occurs in a few hundred draws.
  assert all(v >= 10 for v in seen.values()), seen


@pytest.mark.parametrize("cfg", [
    SyntheticConfig(num_frames=17, num_examples=16, seed=5, scene=SceneConfig(max_objects=2)),
    SyntheticConfig(num_frames=1, num_examples=16, seed=5, scene=SceneConfig(max_objects=2))],
    ids=["video", "image"])
def test_caption_without_rendering_equals_the_examples_caption(cfg):
  for split in ("train", "validation"):
    videos = SyntheticVideos(cfg, split)
    picks = range(len(videos)) if split == "validation" else (0, 3, 7, 15)
    got = [videos.caption(i) for i in picks]
    assert got == [videos[i]["caption"] for i in picks]
    assert len(set(got)) == len(got)  # distinct examples, distinct captions (not one repeated)
  with pytest.raises(IndexError, match="index 16 out of range"):
    SyntheticVideos(cfg).caption(16)


def test_caption_checker_catches_wrong_captions():
  labels = SyntheticVideos(SMALL)[0]["labels"]
  obj = labels["objects"][0]
  wrong_colour = next(c for c in scene_lib.COLOURS if c != obj["colour"])
  caption = SyntheticVideos(SMALL)[0]["caption"].replace(obj["colour"], wrong_colour)
  assert any(p.startswith("colour") for p in captions.caption_mentions(caption, labels))


def _hand_scene(**kw):
  obj = scene_lib.ObjectSpec(shape="square", colour="red", size="medium", direction="right",
                             speed="slow", rotation="none", start=(0.3, 0.5),
                             velocity=(0.25, 0.0), angle0=0.0)
  obj = scene_lib.dataclasses.replace(obj, **kw) if kw else obj
  return scene_lib.Scene(extent=(1.0, 1.0), background="navy", pattern="plain",
                         pattern_phase=(0.0, 0.0), camera="none", objects=(obj,))


def test_flow_and_depth_hand_checked_translation():
  # 64x64, 0.25 units/s at 8 fps = 64 * 0.25 / 8 = 2 px per frame to the right.
  scene = _hand_scene()
  frames, depth, flow = render.render(scene, 5, 64, 64)
  red = np.all(frames == scene_lib.COLOURS["red"], axis=-1)      # [T, H, W]
  # Square of half side 0.8 * 0.15 = 0.12 units = 7.68 px around x = 0.3 * 64 = 19.2 (+ 2 t):
  # pixel centres i + 0.5 in [11.52, 26.88] -> columns 12..26.
  cols = np.where(red[0].any(0))[0]
  assert (cols.min(), cols.max()) == (12, 26)
  for t in range(4):
    np.testing.assert_array_equal(red[t + 1], np.roll(red[t], 2, axis=1))
  np.testing.assert_allclose(flow[red], np.broadcast_to([2.0, 0.0], flow[red].shape), atol=1e-5)
  np.testing.assert_allclose(flow[~red], 0.0)
  assert np.all(depth[red] == 1.0) and np.all(depth[~red] <= 0.3)
  # Background ramp: lower rows nearer.
  assert depth[0, 63, 0] > depth[0, 0, 0]


def test_flow_warps_frames_with_rotation_bounce_and_camera():
  # Generic check on a spinning, bouncing object over a panning checkered background: every pixel's
  # colour at frame t is found at x + flow in frame t + 1 (up to rasterization at object edges).
  obj = scene_lib.ObjectSpec(shape="triangle", colour="yellow", size="large", direction="left",
                             speed="fast", rotation="clockwise", start=(0.25, 0.5),
                             velocity=(-0.3, 0.0), angle0=10.0)
  scene = scene_lib.Scene(extent=(1.0, 1.0), background="gray", pattern="checker",
                          pattern_phase=(0.1, 0.2), camera="up", objects=(obj,))
  h = w = 64
  frames, depth, flow = render.render(scene, 9, h, w)
  times = scene_lib.bounce_times(obj, scene, 9 / 8)
  assert len(times) == 1 and 0 < times[0] < 1.0
  # Background flow = -camera: camera pans up -> scene moves down by 0.12 * 64 / 8 px per frame.
  bg = depth[0] < 0.5
  np.testing.assert_allclose(flow[0][bg], np.broadcast_to([0.0, 0.96], flow[0][bg].shape),
                             atol=1e-5)
  yy, xx = np.mgrid[0:h, 0:w]
  agree = total = 0
  for t in range(8):
    tx = np.round(xx + 0.5 + flow[t, ..., 0] - 0.5).astype(int)
    ty = np.round(yy + 0.5 + flow[t, ..., 1] - 0.5).astype(int)
    ok = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    same = np.all(frames[t][ok] == frames[t + 1][ty[ok], tx[ok]], axis=-1)
    agree += same.sum()
    total += ok.sum()
  assert agree / total > 0.97
  # Object flow after the bounce points right (it moved left before).
  obj_px = depth > 0.5
  before = flow[0][obj_px[0], 0].mean()
  after = flow[8][obj_px[8], 0].mean()
  assert before < 0 < after


def test_stylization_condition_encodes_motion_and_depth():
  scene = _hand_scene()
  _, depth, flow = render.render(scene, 5, 64, 64)
  cond = conditions.stylization_condition(flow, depth)
  assert cond.shape == (5, 64, 64, 3) and cond.dtype == np.uint8
  obj = depth == 1.0
  # 2 px/frame right on a 64 px frame, flow_max = 4 px -> 0.5 + 2 / 8 = 0.75 -> 191.
  assert np.all(cond[..., 0][obj] == 191) and np.all(cond[..., 1][obj] == 128)
  assert np.all(cond[..., 0][~obj] == 128)
  assert np.all(cond[..., 2][obj] == 255)
  with pytest.raises(ValueError, match="flow must be"):
    conditions.stylization_condition(flow[..., 0], depth)


def test_visible_masks_central_box():
  inp = conditions.visible_mask("inpaint_central", 2, 32, 16)
  out = conditions.visible_mask("outpaint_central", 2, 32, 16)
  assert inp.shape == (2, 32, 16)
  np.testing.assert_array_equal(inp, ~out)
  assert out.sum() == 2 * 16 * 8 and out[0, 8:24, 4:12].all()
  with pytest.raises(ValueError, match="mask kind"):
    conditions.visible_mask("left", 1, 8, 8)


def test_soundtrack_pitch_from_colour_and_clicks_at_bounces():
  rng = np.random.default_rng(0)
  labels = {"objects": [{"colour": "blue", "size": "large", "rotation": "none",
                         "bounce_times_s": [1.0]}]}
  wave = sound.soundtrack(labels, 34_000, 16_000, rng)
  quiet = wave[:8000]
  spectrum = np.abs(np.fft.rfft(quiet))
  assert abs(np.argmax(spectrum) * 16_000 / quiet.size - sound.PITCH_HZ["blue"]) < 3.0
  # The click: energy right after t = 1.0 s well above the tone's energy elsewhere.
  at = np.abs(wave[16_000:16_000 + 160]).max()
  before = np.abs(wave[15_000:15_900]).max()
  assert at > before + 0.2
  no_bounce = sound.soundtrack({"objects": [dict(labels["objects"][0], bounce_times_s=[])]},
                               34_000, 16_000, np.random.default_rng(0))
  assert np.abs(no_bounce[16_000:16_160]).max() < before + 0.01


def test_soundtrack_clicks_match_rendered_bounces():
  videos = SyntheticVideos(SyntheticConfig(resolution="32x32", num_frames=17, num_examples=200,
                                           seed=5))
  for i in range(200):
    scene, _ = videos.scene(i)
    labels = videos.labels(scene)
    if labels["objects"][0]["bounces"]:
      break
  ex = videos[i]
  bt = ex["labels"]["objects"][0]["bounce_times_s"][0]
  flat = flat_labels(ex["labels"])
  assert flat["bounces"] >= 1 and "bounc" in ex["caption"]
  s = int(round(bt * 16_000))
  assert np.abs(ex["audio"][s:s + 100]).max() > np.abs(ex["audio"][s - 900:s - 100]).max() + 0.2
  # The object's velocity along its axis flips sign between the frames around the bounce.
  k = int(bt * 8)
  obj = ex["depth"] > 0.5
  axis = 0 if flat["direction"] in ("left", "right") else 1
  assert np.sign(ex["flow"][max(k - 1, 0)][obj[max(k - 1, 0)], axis].mean()) != np.sign(
      ex["flow"][min(k + 1, 16)][obj[min(k + 1, 16)], axis].mean())


def test_flat_labels_and_object_masks():
  ex = SyntheticVideos(SMALL)[2]
  flat = flat_labels(ex["labels"])
  assert set(flat) == set(["shape", "colour", "size", "direction", "speed", "rotation",
                           "bounces", "background", "pattern", "camera", "num_objects"])
  scene, _ = SyntheticVideos(SMALL).scene(2)
  masks = render.object_masks(scene, 17, 32, 32)
  colour = np.asarray(scene_lib.COLOURS[flat["colour"]])
  np.testing.assert_array_equal(masks[0], np.all(ex["frames"] == colour, axis=-1))


def test_detector_recovers_labels_of_rendered_clips():
  from vp_jax.data.synthetic.detect import agreement, detect
  videos = SyntheticVideos(SyntheticConfig(resolution="64x64", num_frames=17, num_examples=40,
                                           seed=42))
  hits = {"colour": 0, "shape": 0, "direction": 0}
  for i in range(len(videos)):
    ex = videos[i]
    for key, ok in agreement(detect(ex["frames"]), flat_labels(ex["labels"])).items():
      hits[key] += ok
  assert hits["colour"] == 40 and hits["direction"] == 40 and hits["shape"] >= 38, hits
  # Hand case: the red square of the flow test moves right 2 px per frame.
  frames, _, _ = render.render(_hand_scene(), 5, 64, 64)
  d = detect(frames)
  assert (d["colour"], d["shape"], d["direction"]) == ("red", "square", "right")
  assert d["velocity_px_per_frame"] == pytest.approx((2.0, 0.0), abs=1e-6)
  still = detect(np.repeat(frames[:1], 5, axis=0))
  assert still["direction"] == "none"
  assert detect(np.zeros((2, 8, 8, 3), np.uint8))["colour"] is None
  with pytest.raises(ValueError, match="frames must be"):
    detect(np.zeros((8, 8, 3), np.uint8))


def test_tokenizer_batches_are_the_datasets_frames_and_soundtrack_crops():
  from vp_jax.data.synthetic import tokenizer_batches
  cfg = SyntheticConfig(resolution="32x32", num_frames=5, num_examples=3)
  data = SyntheticVideos(cfg)
  it = tokenizer_batches.video_batches(cfg, 2)
  b0, b1 = next(it)["video"], next(it)["video"]
  assert b0.shape == (2, 5, 32, 32, 3) and b0.dtype == np.uint8
  np.testing.assert_array_equal(b0[1], data[1]["frames"])
  np.testing.assert_array_equal(b1[1], data[0]["frames"])        # batch 1 = examples 2, 3 % 3
  # Two processes each take their half of every global batch.
  half = next(tokenizer_batches.video_batches(cfg, 2, process_index=1, process_count=2))["video"]
  np.testing.assert_array_equal(half[0], data[1]["frames"])
  held_out = next(tokenizer_batches.video_batches(cfg, 1, split="validation"))["video"]
  np.testing.assert_array_equal(held_out[0], SyntheticVideos(cfg, "validation")[0]["frames"])

  audio = tokenizer_batches.audio_batches(cfg, 2, 1000)
  w0 = next(audio)["wave"]
  assert w0.shape == (2, 1000) and w0.dtype == np.float32
  track = data[0]["audio"]
  starts = [s for s in range(track.size - 999) if np.array_equal(track[s:s + 1000], w0[0])]
  assert starts, "a crop must be a window of the example's soundtrack"
  again = tokenizer_batches.audio_batches(cfg, 2, 1000)
  again.set_state({"index": 0})
  np.testing.assert_array_equal(next(again)["wave"], w0)         # deterministic by position
  with pytest.raises(ValueError, match="longer than"):
    next(tokenizer_batches.audio_batches(cfg, 1, track.size + 1))
  with pytest.raises(ValueError, match="no audio"):
    tokenizer_batches.audio_batches(SyntheticConfig(num_frames=1), 1, 100)
  with pytest.raises(ValueError, match="not divisible"):
    tokenizer_batches.video_batches(cfg, 3, process_count=2)


def test_frame_counts_audio_samples_and_central_box():
  assert [formats.check_num_frames(n) for n in (1, 5, 17, 41)] == [1, 5, 17, 41]
  for bad in (0, 16, 18):
    with pytest.raises(ValueError, match=f"num_frames={bad}"):
      formats.check_num_frames(bad)
  assert formats.audio_samples(17) == 34_000 and formats.audio_samples(41) == 82_000
  assert formats.audio_samples(17, sample_rate=24_000) == 51_000
  assert formats.audio_samples(1) == 2_000
  rows, cols = conditions.central_box(32, 16)
  assert (rows, cols) == (slice(8, 24), slice(4, 12))
  rows, cols = conditions.central_box(10, 7, 0.3)                 # 3 x 2 pixels, centred
  assert (rows, cols) == (slice(3, 6), slice(2, 4))
  with pytest.raises(ValueError, match="fraction 1.0"):
    conditions.central_box(8, 8, 1.0)


def test_to_tfds_example_keeps_the_clip_and_flattens_the_labels():
  from vp_jax.data.synthetic.tfds_builder import to_tfds_example
  ex = SyntheticVideos(SyntheticConfig(resolution="32x32", num_frames=5, num_examples=2), "train")[1]
  out = to_tfds_example(ex)
  np.testing.assert_array_equal(out["video"], ex["frames"])
  assert out["depth"].dtype == np.float16 and out["flow"].dtype == np.float16
  # float16 keeps depth and flow to its precision (flow is in pixels, a few at 32x32).
  np.testing.assert_allclose(out["flow"].astype(np.float32), ex["flow"], atol=2e-3, rtol=1e-3)
  np.testing.assert_allclose(out["depth"].astype(np.float32), ex["depth"], atol=1e-3, rtol=1e-3)
  assert out["id"] == ex["id"] and out["caption"] == ex["caption"]
  assert json.loads(out["labels_json"]) == json.loads(json.dumps(ex["labels"]))
  flat = flat_labels(ex["labels"])
  assert out["label_shape"] == str(flat["shape"]) and out["label_camera"] == str(flat["camera"])
  assert out["label_num_objects"] == np.int32(len(ex["labels"]["objects"]))
  assert out["label_bounces"].dtype == np.int32 and out["has_audio"] is bool(ex["has_audio"])
