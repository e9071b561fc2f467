"""Direct unit tests of the tokenization job's features (vp_jax.data.tokenize.features, runner,
sources): the config and tokenizer records, the on-disk feature layout, the runner helpers, the tfds
example normalization, and encode_batch on a real in-memory MAGVIT-v2 `tiny` (16x16 clips only) with
numpy text/audio doubles."""
import json
import re
import types

import numpy as np
import pytest
import tensorflow as tf

from vp_jax.data import conditions
from vp_jax.data.synthetic import flat_labels
from vp_jax.data.tokenize import features, runner, sources
from vp_jax.data.tokenize.features import TokenizeConfig, Tokenizers
from real_tokenizers import fill
from tokenize_fakes import (Described, FakeAudio, FakeText, ListSource, Plain,
                            synthetic_clips, synthetic_images)
from tokenize_fakes import video_tok  # noqa: F401  (pytest fixture)


# --------------------------------------------------------------------------------------------------
# features: config, records, shapes, layout

def test_output_affecting_is_the_config_without_the_batch_size():
  cfg = TokenizeConfig(shard_size=3, batch_size=5, masks=("inpaint_central",), box_fraction=0.25)
  assert cfg.output_affecting() == {
      "shard_size": 3, "masks": ("inpaint_central",), "box_fraction": 0.25, "stylization": None,
      "flow_max": 0.0625, "text_dtype": "float16"}
  assert TokenizeConfig(shard_size=3, batch_size=1, masks=("inpaint_central",),
                        box_fraction=0.25).output_affecting() == cfg.output_affecting()
  assert TokenizeConfig(stylization=False).output_affecting()["stylization"] is False


def test_describe_component():
  assert features.describe_component(None) is None
  record = {"class": "x.Y", "step": 3}
  out = features.describe_component(Described(record))
  assert out == {"class": "x.Y", "step": 3} and out is not record   # a copy
  proxy = features.describe_component(Described(types.MappingProxyType({"version": "v2"})))
  assert proxy == {"version": "v2"} and type(proxy) is dict
  # Without describe(): the class plus the known attributes, as strings.
  assert features.describe_component(Plain()) == {
      "class": "tokenize_fakes.Plain", "checkpoint": "/ckpt/run", "step": "7",
      "model_id": "m-1"}
  assert features.describe_component(3.5) == {"class": "builtins.float"}


def _full_features():
  """One example's features with every optional part (commit, stylization, audio, text, labels)."""
  labels = synthetic_images(1)[0]["labels"]
  return {
      "id": "clip-ü", "kind": "video", "caption": "a red circle — bouncing",
      "video_tokens": np.arange(20, dtype=np.int32).reshape(5, 2, 2),
      "first_frame_tokens": np.array([[[7, 8], [9, 1023]]], np.int32),
      "first_frame_png": b"\x89PNG\x00\x01 raw bytes",
      "commit_inpaint_central_tokens": np.full((5, 2, 2), 3, np.int32),
      "stylization_tokens": (np.arange(20, dtype=np.int32) * 2).reshape(5, 2, 2),
      "has_audio": True, "audio_tokens": np.array([[0, 1, 2], [255, 3, 4], [5, 6, 7],
                                                   [8, 9, 10]], np.int32),
      "text_embeddings": (np.arange(64 * 4).reshape(64, 4) / 8).astype(np.float16),
      "text_mask": np.arange(64) < 5, "text_num_truncated": 2,
      "labels": labels}


def test_shapes_of():
  f = _full_features()
  assert features.shapes_of(f) == {
      "video_tokens": [5, 2, 2], "first_frame_tokens": [1, 2, 2],
      "commit_inpaint_central_tokens": [5, 2, 2], "stylization_tokens": [5, 2, 2],
      "audio_tokens": [4, 3], "text_embeddings": [64, 4], "text_mask": [64]}
  bare = {"video_tokens": np.zeros((1, 4, 4)), "first_frame_tokens": np.zeros((1, 4, 4)),
          "has_audio": False, "audio_tokens": None}
  assert features.shapes_of(bare) == {"video_tokens": [1, 4, 4], "first_frame_tokens": [1, 4, 4]}


def _manifest_of(f, has_labels):
  feats = sorted(k for k, v in f.items() if v is not None)
  return {"shapes": features.shapes_of(f), "features": feats, "has_labels": has_labels}


def test_feature_spec_follows_the_manifest():
  f = _full_features()
  spec = features.feature_spec(_manifest_of(f, has_labels=True))
  labels = {f"label_{k}" for k in ("shape", "colour", "size", "direction", "speed", "rotation",
                                   "background", "pattern", "camera", "bounces", "num_objects")}
  assert set(spec) == {"id", "kind", "caption", "first_frame_png", "labels_json", "video_tokens",
                       "first_frame_tokens", "commit_inpaint_central_tokens",
                       "stylization_tokens", "audio_tokens", "has_audio", "text_embeddings",
                       "text_mask", "text_num_truncated"} | labels
  assert spec["video_tokens"] == tf.io.FixedLenFeature([20], tf.int64)
  assert spec["first_frame_tokens"] == tf.io.FixedLenFeature([4], tf.int64)
  assert spec["text_mask"] == tf.io.FixedLenFeature([64], tf.int64)
  assert spec["audio_tokens"] == tf.io.FixedLenFeature([12], tf.int64, default_value=[-1] * 12)
  assert spec["has_audio"] == tf.io.FixedLenFeature([1], tf.int64)
  assert spec["text_embeddings"] == tf.io.FixedLenFeature([], tf.string)
  assert spec["label_colour"] == tf.io.FixedLenFeature([], tf.string)
  assert spec["label_bounces"] == tf.io.FixedLenFeature([1], tf.int64)
  minimal = features.feature_spec({"shapes": {"video_tokens": [1, 4, 4],
                                              "first_frame_tokens": [1, 4, 4]},
                                   "features": ["id"], "has_labels": False})
  assert set(minimal) == {"id", "kind", "caption", "first_frame_png", "labels_json",
                          "video_tokens", "first_frame_tokens"}
  assert minimal["video_tokens"] == tf.io.FixedLenFeature([16], tf.int64)


def test_to_tf_example_round_trips_through_feature_spec():
  f = _full_features()
  record = features.to_tf_example(f)
  x = {k: v.numpy() for k, v in tf.io.parse_single_example(
      record, features.feature_spec(_manifest_of(f, has_labels=True))).items()}
  assert x["id"].decode() == "clip-ü" and x["kind"] == b"video"
  assert x["caption"].decode() == "a red circle — bouncing"
  assert x["first_frame_png"] == b"\x89PNG\x00\x01 raw bytes"
  np.testing.assert_array_equal(x["video_tokens"], np.arange(20))
  np.testing.assert_array_equal(x["first_frame_tokens"], [7, 8, 9, 1023])
  np.testing.assert_array_equal(x["commit_inpaint_central_tokens"], [3] * 20)
  np.testing.assert_array_equal(x["stylization_tokens"], np.arange(20) * 2)
  np.testing.assert_array_equal(x["audio_tokens"], [0, 1, 2, 255, 3, 4, 5, 6, 7, 8, 9, 10])
  np.testing.assert_array_equal(x["has_audio"], [1])
  emb = np.frombuffer(x["text_embeddings"], np.float16).reshape(64, 4)
  np.testing.assert_array_equal(emb, f["text_embeddings"])
  assert emb[10, 3] == np.float16(43 / 8)
  np.testing.assert_array_equal(x["text_mask"], [1] * 5 + [0] * 59)
  np.testing.assert_array_equal(x["text_num_truncated"], [2])
  assert json.loads(x["labels_json"]) == f["labels"]
  flat = flat_labels(f["labels"])
  for k in ("shape", "colour", "size", "direction", "speed", "rotation", "background", "pattern",
            "camera"):
    assert x[f"label_{k}"].decode() == str(flat[k])
  np.testing.assert_array_equal(x["label_bounces"], [flat["bounces"]])
  np.testing.assert_array_equal(x["label_num_objects"], [flat["num_objects"]])


def test_to_tf_example_without_audio_or_labels_reads_audio_back_as_minus_one():
  f = _full_features()
  f.update(has_audio=False, audio_tokens=None, labels={})
  del f["text_embeddings"], f["text_mask"], f["text_num_truncated"]
  record = features.to_tf_example(f)
  stored = set(tf.train.Example.FromString(record).features.feature)
  assert stored == {"id", "kind", "caption", "video_tokens", "first_frame_tokens",
                    "first_frame_png", "labels_json", "commit_inpaint_central_tokens",
                    "stylization_tokens", "has_audio"}
  manifest = _manifest_of(f, has_labels=False)
  manifest["shapes"]["audio_tokens"] = [4, 3]   # another clip of the dataset had audio
  x = tf.io.parse_single_example(record, features.feature_spec(manifest))
  np.testing.assert_array_equal(x["audio_tokens"].numpy(), [-1] * 12)
  np.testing.assert_array_equal(x["has_audio"].numpy(), [0])
  assert x["labels_json"].numpy() == b"{}"


def test_to_tf_example_bytes_do_not_depend_on_dict_order():
  f = _full_features()
  reordered = dict(reversed(list(f.items())))
  assert features.to_tf_example(reordered) == features.to_tf_example(f)
  g = dict(f, video_tokens=f["video_tokens"] + 1)
  assert features.to_tf_example(g) != features.to_tf_example(f)


# --------------------------------------------------------------------------------------------------
# runner helpers

@pytest.mark.parametrize("setting,has_structure,estimator,expected", [
    (None, False, None, False), (None, True, None, True), (None, False, "est", True),
    (True, True, None, True), (True, False, "est", True), (False, True, "est", False),
    (False, False, None, False)])
def test_resolve_stylization(setting, has_structure, estimator, expected):
  est = (lambda frames: None) if estimator else None
  src = ListSource([{}], has_structure=has_structure)
  got = runner.resolve_stylization(src, TokenizeConfig(stylization=setting), est)
  assert got is expected


def test_resolve_stylization_true_without_structure_names_the_source():
  class Bare:   # no has_structure attribute at all
    def describe(self):
      return {"type": "bare", "path": "/v"}
  with pytest.raises(ValueError, match=re.escape(
      "stylization=True but the source {'type': 'bare', 'path': '/v'} has no optical flow and "
      "depth; pass a structure estimator or set stylization=False.")):
    runner.resolve_stylization(Bare(), TokenizeConfig(stylization=True), None)
  assert runner.resolve_stylization(Bare(), TokenizeConfig(), None) is False


def test_tokenizer_records():
  tok = Tokenizers(video=Described({"class": "V", "step": 4}), audio=None, text=Plain())
  assert runner.tokenizer_records(tok) == {
      "video": {"class": "V", "step": 4}, "audio": None,
      "text": {"class": "tokenize_fakes.Plain", "checkpoint": "/ckpt/run", "step": "7",
               "model_id": "m-1"}}


# --------------------------------------------------------------------------------------------------
# sources.normalize_tfds_example

def test_normalize_tfds_video_example():
  video = np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3).astype(np.int64)
  labels = {"background": "gray", "objects": []}
  ex = {"video": video, "id": b"vid-1", "caption": b"a cat \xc3\xa9", "audio": np.array([0.5, -1.0]),
        "labels_json": json.dumps(labels).encode(), "depth": np.ones((2, 3, 4), np.float64),
        "flow": np.zeros((2, 3, 4, 2), np.float64)}
  out = sources.normalize_tfds_example(ex)
  assert set(out) == {"id", "frames", "audio", "has_audio", "caption", "labels", "depth", "flow"}
  assert out["id"] == "vid-1" and out["caption"] == "a cat é"
  assert out["frames"].dtype == np.uint8 and out["frames"].shape == (2, 3, 4, 3)
  np.testing.assert_array_equal(out["frames"], video)
  assert out["audio"].dtype == np.float32
  np.testing.assert_array_equal(out["audio"], [0.5, -1.0])
  assert out["has_audio"] is True and out["labels"] == labels
  assert out["depth"].dtype == np.float32 and out["depth"].shape == (2, 3, 4)
  assert out["flow"].dtype == np.float32 and out["flow"].shape == (2, 3, 4, 2)


def test_normalize_tfds_image_example():
  image = np.full((3, 4, 3), 200, np.uint8)
  out = sources.normalize_tfds_example({"image": image, "depth": np.ones((1, 3, 4))})
  assert out["frames"].shape == (1, 3, 4, 3) and out["frames"][0, 2, 3, 1] == 200
  assert out["id"] == "" and out["caption"] == "" and out["labels"] == {}
  assert out["audio"].shape == (0,) and out["audio"].dtype == np.float32
  assert out["has_audio"] is False
  assert "depth" not in out and "flow" not in out   # only both together are structure
  # An explicit has_audio wins over the audio's size.
  muted = sources.normalize_tfds_example({"image": image, "audio": np.ones(4, np.float32),
                                          "has_audio": np.bool_(False), "id": 17})
  assert muted["has_audio"] is False and muted["id"] == "17"


def test_normalize_tfds_example_without_media():
  with pytest.raises(ValueError, match=re.escape(
      "tfds example has neither 'video' nor 'image' (keys ['audio', 'id']).")):
    sources.normalize_tfds_example({"id": b"x", "audio": np.zeros(3)})


# --------------------------------------------------------------------------------------------------
# features.encode_batch (real tiny MAGVIT, fake audio/text)

def test_encode_batch_images(video_tok):
  ex = synthetic_images(1)[0]
  ex["labels"] = None                     # falsy labels are written as {}
  text, audio = FakeText(), FakeAudio()
  tok = Tokenizers(video=video_tok, audio=audio, text=text)
  cfg = TokenizeConfig(batch_size=2)      # masks on, but images have no COMMIT conditions
  [out] = features.encode_batch([ex], tok, cfg, stylization=True)
  want = np.asarray(video_tok.encode(fill(ex["frames"][None], 2)))[0]
  assert set(out) == {"id", "kind", "video_tokens", "first_frame_tokens", "first_frame_png",
                      "text_embeddings", "text_mask", "text_num_truncated", "caption", "labels"}
  assert out["id"] == ex["id"] and out["kind"] == "image" and out["caption"] == ex["caption"]
  assert out["video_tokens"].dtype == np.int32 and out["video_tokens"].shape == (1, 2, 2)
  np.testing.assert_array_equal(out["video_tokens"], want)
  np.testing.assert_array_equal(out["first_frame_tokens"], want)
  np.testing.assert_array_equal(tf.io.decode_png(out["first_frame_png"]).numpy(),
                                ex["frames"][0])
  assert audio.shapes == []               # no audio for images
  assert text.calls == [[ex["caption"]] * 2]   # padded to the batch size with the last caption
  n = len(ex["caption"].split())
  assert out["text_embeddings"].dtype == np.float16 and out["text_embeddings"].shape == (64, 4)
  assert out["text_embeddings"][1, 2] == np.float16(100 * len(ex["caption"]) + 1.2)
  assert out["text_mask"].dtype == bool and out["text_mask"].sum() == n and out["text_mask"][0]
  assert out["text_num_truncated"] == n % 3 and type(out["text_num_truncated"]) is int
  assert out["labels"] == {}


def test_encode_batch_videos_with_conditions_and_audio(video_tok):
  clips = synthetic_clips(2)
  clips[0]["has_audio"] = True
  clips[1]["has_audio"] = False
  audio = FakeAudio()
  tok = Tokenizers(video=video_tok, audio=audio)
  cfg = TokenizeConfig(batch_size=2, box_fraction=0.5)
  out = features.encode_batch(clips, tok, cfg, stylization=True)
  frames = np.stack([c["frames"] for c in clips])
  video = np.asarray(video_tok.encode(frames))
  first = np.asarray(video_tok.encode(frames[:, :1]))
  style = np.asarray(video_tok.encode(np.stack([
      conditions.stylization_condition(c["flow"], c["depth"]) for c in clips])))
  commit = {k: np.asarray(video_tok.commit_condition(frames, np.broadcast_to(
      conditions.visible_mask(k, 5, 16, 16, 0.5), (2, 5, 16, 16)))) for k in conditions.MASKS}
  for i, o in enumerate(out):
    assert o["kind"] == "video" and o["id"] == clips[i]["id"]
    assert o["labels"] == clips[i]["labels"]
    np.testing.assert_array_equal(o["video_tokens"], video[i])
    np.testing.assert_array_equal(o["first_frame_tokens"], first[i])
    np.testing.assert_array_equal(o["stylization_tokens"], style[i])
    for k in conditions.MASKS:
      assert o[f"commit_{k}_tokens"].shape == (2, 2, 2)
      np.testing.assert_array_equal(o[f"commit_{k}_tokens"], commit[k][i])
    assert "text_embeddings" not in o
  assert [o["has_audio"] for o in out] == [True, False]
  assert out[1]["audio_tokens"] is None
  base = int(np.round(1000 * np.float32(clips[0]["audio"][0])))
  np.testing.assert_array_equal(out[0]["audio_tokens"],
                                base + 10 * np.arange(4)[:, None] + np.arange(3)[None])
  assert audio.shapes == [(2, clips[0]["audio"].size)]   # 1 clip with audio, filled to 2


def test_encode_batch_stylization_needs_structure_or_an_estimator(video_tok):
  clips = synthetic_clips(2)
  bare = [{k: c[k] for k in ("id", "frames", "audio", "has_audio", "caption", "labels")}
          for c in clips]
  cfg = TokenizeConfig(batch_size=2, masks=())
  with pytest.raises(ValueError, match=re.escape(
      f"{bare[0]['id']}: stylization needs optical flow and depth; the source has none (pass a "
      "structure estimator or disable stylization).")):
    features.encode_batch(bare, Tokenizers(video=video_tok), cfg, stylization=True)
  seen = []

  def estimator(frames):
    seen.append(frames.shape)
    return np.zeros((5, 16, 16, 2), np.float32), np.zeros((5, 16, 16), np.float32)

  out = features.encode_batch(bare, Tokenizers(video=video_tok), cfg, stylization=True,
                              structure_estimator=estimator)
  assert seen == [(5, 16, 16, 3)] * 2
  grey = conditions.stylization_condition(np.zeros((5, 16, 16, 2)), np.zeros((5, 16, 16)))
  assert grey[0, 0, 0].tolist() == [128, 128, 0]
  want = np.asarray(video_tok.encode(np.stack([grey, grey])))
  for o, w in zip(out, want):
    np.testing.assert_array_equal(o["stylization_tokens"], w)
    assert not any(k.startswith("commit_") for k in o)   # masks=()
    assert "has_audio" not in o                          # no audio tokenizer


def test_encode_batch_rejects_audio_of_different_lengths(video_tok):
  clips = synthetic_clips(2)
  clips[0]["audio"], clips[1]["audio"] = np.zeros(10, np.float32), np.zeros(12, np.float32)
  clips[0]["has_audio"] = clips[1]["has_audio"] = True
  with pytest.raises(ValueError, match=re.escape(
      "audio lengths differ within a batch: [10, 12] samples.")):
    features.encode_batch(clips, Tokenizers(video=video_tok, audio=FakeAudio()),
                          TokenizeConfig(batch_size=2, masks=()), stylization=False)


def test_encode_batch_names_examples_of_different_frame_shapes():
  a = {"id": "a", "frames": np.zeros((1, 16, 16, 3), np.uint8), "caption": ""}
  b = {"id": "b", "frames": np.zeros((1, 8, 8, 3), np.uint8), "caption": ""}
  with pytest.raises(ValueError, match=re.escape("examples ['a', 'b'] have different frame shapes")):
    features.encode_batch([a, b], Tokenizers(video=None), TokenizeConfig(batch_size=2),
                          stylization=False)
