"""Direct unit tests of the tokenization job's building blocks (vp_jax.data.tokenize): the shard plan,
job.json / sidecars / manifest, the on-disk feature layout, the runner helpers and the tfds example
normalization. The whole-pipeline behaviour is tests/test_data_tokenize.py's.

`encode_batch` / `write_shard` run a real MAGVIT-v2 `tiny` (10-bit LFQ), built in memory with random
weights, on 16x16 clips only (three small compiles: image, 5-frame video, float COMMIT input); the
audio and text encoders are numpy fakes defined here (their output only has to be traceable).
"""
import json
import os
import re
import types

import numpy as np
import pytest
import tensorflow as tf

from vp_jax.data import conditions
from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos, flat_labels
from vp_jax.data.tokenize import features, runner, shards, sources
from vp_jax.data.tokenize.features import TokenizeConfig, Tokenizers

FRAME_SHARD = "train.tfrecord-{:05d}-of-{:05d}"


# --------------------------------------------------------------------------------------------------
# Fakes.

class _ListSource:
  """A source over a list of examples; `describe()` is what the fingerprint sees."""

  def __init__(self, examples, split="train", has_structure=False, **describe):
    self.examples, self.split, self.has_structure = list(examples), split, has_structure
    self.extra = describe

  def __len__(self):
    return len(self.examples)

  def read(self, start, stop):
    yield from self.examples[start:stop]

  def describe(self):
    return {"type": "list", "split": self.split, "n": len(self.examples), **self.extra}


class _ShortSource(_ListSource):
  """Gives one example fewer than asked for (a truncated / changed underlying dataset)."""

  def read(self, start, stop):
    yield from self.examples[start:stop - 1]


class _FakeText:
  """Text encoder double: embeddings[b, l, d] = 100 * len(text_b) + l + d / 10 on the first
  len(words) positions, zero elsewhere; num_truncated[b] = len(words) % 3."""
  model_id = "fake-text/1"

  def __init__(self):
    self.calls = []

  def encode(self, texts):
    from vp_jax.text.encoder import TextEmbeddings
    self.calls.append(list(texts))
    b, length, dim = len(texts), features.TEXT_LEN, 4
    emb = np.zeros((b, length, dim), np.float32)
    mask = np.zeros((b, length), bool)
    for i, t in enumerate(texts):
      n = len(t.split())
      mask[i, :n] = True
      emb[i, :n] = (100 * len(t) + np.arange(n)[:, None] + np.arange(dim)[None] / 10)
    trunc = np.array([len(t.split()) % 3 for t in texts], np.int32)
    return TextEmbeddings(emb, mask, trunc)


class _FakeAudio:
  """Audio tokenizer double: codes[b, level, t] = round(1000 * wave_b[0]) + 10 * level + t."""

  def __init__(self):
    self.shapes = []

  def encode(self, waves):
    waves = np.asarray(waves)
    self.shapes.append(waves.shape)
    base = np.round(1000 * waves[:, 0]).astype(np.int64)
    return base[:, None, None] + 10 * np.arange(4)[None, :, None] + np.arange(3)[None, None, :]


class _Described:
  def __init__(self, record):
    self.record = record

  def describe(self):
    return self.record


class _Plain:
  checkpoint = "/ckpt/run"
  step = 7
  model_id = "m-1"


def _fill(batch, size):
  batch = np.asarray(batch)
  return np.concatenate([batch] + [batch[-1:]] * (size - batch.shape[0]), axis=0)


@pytest.fixture(scope="module")
def video_tok():
  """A real MAGVIT-v2 `tiny` tokenizer (random init, in memory) on one device."""
  import jax
  from vp_jax.models.magvit import preset
  from vp_jax.parallel.mesh import MeshConfig, make_mesh
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer, create_tokenizer
  tok = VideoTokenizer.from_module(create_tokenizer(preset("tiny", embedding_dim=10)),
                                   make_mesh(MeshConfig(), devices=jax.devices()[:1]))
  assert tok.latent_shape(5, 16, 16) == (2, 2, 2)
  return tok


def _images(n, hw=(16, 16), seed=3):
  """n synthetic still images (with labels, no audio) at hw."""
  videos = SyntheticVideos(SyntheticConfig(resolution=hw, num_frames=1, num_examples=n, seed=seed))
  return [videos[i] for i in range(n)]


def _clips(n, seed=5):
  """n synthetic 5-frame 16x16 clips (with audio, labels, flow and depth)."""
  videos = SyntheticVideos(SyntheticConfig(resolution=(16, 16), num_frames=5, num_examples=n,
                                           seed=seed))
  return [videos[i] for i in range(n)]


def _plan(tmp_path, n=9, shard_size=4, **kw):
  src = _ListSource([{"id": str(i)} for i in range(n)], **kw)
  return shards.make_plan(str(tmp_path), src, TokenizeConfig(shard_size=shard_size),
                          {"video": {"class": "V"}}, stylization=False)


def _touch(path, text=""):
  with open(path, "w") as f:
    f.write(text)


# --------------------------------------------------------------------------------------------------
# shards.Plan

def test_plan_names_paths_and_ranges_including_the_short_last_shard():
  plan = shards.Plan(out_dir="gs://bucket/tok/", split="train", num_examples=9, num_shards=5,
                     shard_size=2, fingerprint="f" * 16, job={})
  assert plan.shard_name(2) == "train.tfrecord-00002-of-00005"
  assert plan.shard_name(0) == "train.tfrecord-00000-of-00005"
  assert plan.shard_path(2) == "gs://bucket/tok/train.tfrecord-00002-of-00005"  # one slash
  assert plan.sidecar_path(4) == "gs://bucket/tok/train.tfrecord-00004-of-00005.json"
  assert [plan.shard_range(i) for i in range(5)] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
  for bad in (5, -1):   # past the last shard (start > stop) or negative: an error, not a range
    with pytest.raises(IndexError, match=f"shard {bad} out of range; the plan has 5 shards"):
      plan.shard_range(bad)
  val = shards.Plan(out_dir="/data/out", split="validation", num_examples=123456,
                    num_shards=123456, shard_size=1, fingerprint="", job={})
  assert val.shard_path(7) == "/data/out/validation.tfrecord-00007-of-123456"


# --------------------------------------------------------------------------------------------------
# shards.make_plan

def test_make_plan_writes_job_json_and_has_a_stable_fingerprint(tmp_path):
  out = tmp_path / "a"
  plan = _plan(out, n=9, shard_size=4, split="validation")
  assert (plan.split, plan.num_examples, plan.num_shards, plan.shard_size) == (
      "validation", 9, 3, 4)
  assert plan.out_dir == str(out)
  assert plan.shard_range(2) == (8, 9)
  assert plan.shard_name(1) == "validation.tfrecord-00001-of-00003"
  assert re.fullmatch(r"[0-9a-f]{16}", plan.fingerprint)
  job = json.loads((out / "job.json").read_text())
  assert job == {
      "fingerprint": plan.fingerprint, "format_version": 1,
      "source": {"type": "list", "split": "validation", "n": 9},
      "config": {"shard_size": 4, "masks": ["inpaint_central", "outpaint_central"],
                 "box_fraction": 0.5, "stylization": None, "flow_max": 0.0625,
                 "text_dtype": "float16"},
      "stylization": False, "tokenizers": {"video": {"class": "V"}}}
  assert plan.job == {k: v for k, v in job.items() if k != "fingerprint"} | {
      "config": TokenizeConfig(shard_size=4).output_affecting()}
  # Same job again (in the same or another directory): the same fingerprint, job.json untouched.
  before = (out / "job.json").read_bytes()
  assert _plan(out, n=9, shard_size=4, split="validation").fingerprint == plan.fingerprint
  assert (out / "job.json").read_bytes() == before
  assert _plan(tmp_path / "b", n=9, shard_size=4, split="validation").fingerprint == \
      plan.fingerprint
  # The batch size does not change the bytes written, so it is not part of the job.
  src = _ListSource([{"id": str(i)} for i in range(9)], split="validation")
  again = shards.make_plan(str(out), src, TokenizeConfig(shard_size=4, batch_size=3),
                           {"video": {"class": "V"}}, stylization=False)
  assert again.fingerprint == plan.fingerprint


def test_make_plan_defaults_the_split_to_train(tmp_path):
  class NoSplit(_ListSource):
    def describe(self):
      return {"type": "nosplit"}
  plan = shards.make_plan(str(tmp_path), NoSplit([{}] * 3), TokenizeConfig(shard_size=2), {},
                          stylization=False)
  assert (plan.split, plan.num_shards, plan.shard_range(1)) == ("train", 2, (2, 3))


@pytest.mark.parametrize("change", ["source", "shard_size", "box_fraction", "masks", "stylization",
                                    "tokenizers"])
def test_make_plan_refuses_a_directory_of_a_different_job(tmp_path, change):
  records = {"video": {"class": "V", "step": 1}}
  plan = shards.make_plan(str(tmp_path), _ListSource([{}] * 5), TokenizeConfig(shard_size=2),
                          records, stylization=False)
  before = (tmp_path / "job.json").read_bytes()
  args = dict(source=_ListSource([{}] * 5), config=TokenizeConfig(shard_size=2),
              tokenizer_records=records, stylization=False)
  if change == "source":
    args["source"] = _ListSource([{}] * 5, seed=2)
  elif change == "shard_size":
    args["config"] = TokenizeConfig(shard_size=3)
  elif change == "box_fraction":
    args["config"] = TokenizeConfig(shard_size=2, box_fraction=0.25)
  elif change == "masks":
    args["config"] = TokenizeConfig(shard_size=2, masks=("inpaint_central",))
  elif change == "stylization":
    args["stylization"] = True
  else:
    args["tokenizer_records"] = {"video": {"class": "V", "step": 2}}
  with pytest.raises(shards.JobMismatchError,
                     match=re.escape(f"{tmp_path} holds shards of a different tokenization job "
                                     f"(fingerprint {plan.fingerprint} != ")
                     + r"[0-9a-f]{16}: source, config or tokenizers changed\)"):
    shards.make_plan(str(tmp_path), args["source"], args["config"], args["tokenizer_records"],
                     stylization=args["stylization"])
  assert issubclass(shards.JobMismatchError, RuntimeError)
  assert (tmp_path / "job.json").read_bytes() == before   # the old job's record is kept


def test_make_plan_rejects_an_empty_source_naming_it(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=re.escape(
      "tokenize: source {'type': 'list', 'split': 'train', 'n': 0, 'path': '/x/empty'} is "
      "empty.")):
    shards.make_plan(str(out), _ListSource([], path="/x/empty"), TokenizeConfig(), {},
                     stylization=False)
  assert not out.exists()   # nothing written


# --------------------------------------------------------------------------------------------------
# shards.finished_shards / write_manifest

def test_finished_shards_needs_both_the_shard_and_its_sidecar(tmp_path):
  plan = _plan(tmp_path, n=10, shard_size=2)   # 5 shards
  assert shards.finished_shards(plan) == set()
  _touch(plan.shard_path(0)); _touch(plan.sidecar_path(0))    # finished
  _touch(plan.shard_path(1))                                  # renamed, sidecar not yet written
  _touch(plan.sidecar_path(2))                                # sidecar without its shard
  _touch(plan.shard_path(3) + ".tmp")                         # a killed run's temporary
  _touch(plan.shard_path(4)); _touch(plan.sidecar_path(4))    # finished
  assert shards.finished_shards(plan) == {0, 4}
  _touch(plan.sidecar_path(1))
  assert shards.finished_shards(plan) == {0, 1, 4}


def _sidecar(plan, i, count, with_audio, labelled, shapes, feats, seconds):
  start, stop = plan.shard_range(i)
  s = {"shard": plan.shard_name(i), "range": [start, stop], "count": count,
       "with_audio": with_audio, "labelled": labelled, "shapes": shapes, "features": feats,
       "seconds": seconds, "fingerprint": plan.fingerprint}
  _touch(plan.shard_path(i))
  _touch(plan.sidecar_path(i), json.dumps(s))


def test_write_manifest_lists_the_unfinished_shards(tmp_path):
  plan = _plan(tmp_path, n=10, shard_size=2)
  shapes = {"video_tokens": [1, 2, 2]}
  _sidecar(plan, 0, 2, 0, 2, shapes, ["id"], 0.1)
  _sidecar(plan, 2, 2, 0, 2, shapes, ["id"], 0.1)
  _touch(plan.shard_path(1))            # no sidecar: unfinished
  _touch(plan.sidecar_path(4))          # no shard: unfinished
  with pytest.raises(RuntimeError, match=re.escape(
      f"{tmp_path}: shards [1, 3, 4] are not finished; rerun the job.")):
    shards.write_manifest(plan)
  assert not (tmp_path / "manifest.json").exists()


def test_write_manifest_sums_the_sidecars(tmp_path):
  plan = _plan(tmp_path, n=9, shard_size=4)   # shards of 4, 4, 1
  video = {"video_tokens": [5, 2, 2], "first_frame_tokens": [1, 2, 2], "audio_tokens": [4, 3],
           "text_embeddings": [64, 4], "text_mask": [64]}
  style = dict(video, stylization_tokens=[5, 2, 2])
  _sidecar(plan, 0, 4, 3, 4, video, ["id", "video_tokens", "has_audio"], 1.25)
  _sidecar(plan, 1, 4, 0, 4, style, ["id", "stylization_tokens"], 2.5)
  _sidecar(plan, 2, 1, 1, 1, {"video_tokens": [5, 2, 2]}, ["caption"], 0.0004)
  manifest = shards.write_manifest(plan)
  assert manifest == {
      "format_version": 1, "fingerprint": plan.fingerprint, "split": "train",
      "num_examples": 9, "num_with_audio": 4, "num_shards": 3,
      "shards": [FRAME_SHARD.format(i, 3) for i in range(3)],
      "shapes": style,
      "features": ["caption", "has_audio", "id", "stylization_tokens", "video_tokens"],
      "has_labels": True,
      "token_counts": {"video_tokens": 20, "first_frame_tokens": 4, "audio_tokens": 12,
                       "stylization_tokens": 20},
      "source": {"type": "list", "split": "train", "n": 9},
      "config": TokenizeConfig(shard_size=4).output_affecting(),
      "stylization": True, "tokenizers": {"video": {"class": "V"}},
      "tokenize_seconds": 3.75}   # 1.25 + 2.5 + 0.0004 rounded to ms
  on_disk = json.loads((tmp_path / "manifest.json").read_text())
  assert on_disk == json.loads(json.dumps(manifest))
  assert not (tmp_path / "manifest.json.tmp").exists()


def test_write_manifest_has_labels_only_if_every_example_is_labelled(tmp_path):
  plan = _plan(tmp_path, n=4, shard_size=2)
  _sidecar(plan, 0, 2, 0, 2, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  _sidecar(plan, 1, 2, 0, 1, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  manifest = shards.write_manifest(plan)
  assert manifest["has_labels"] is False and manifest["stylization"] is False
  assert manifest["num_examples"] == 4 and manifest["token_counts"] == {"video_tokens": 4}


def test_write_manifest_rejects_shards_of_different_shapes(tmp_path):
  plan = _plan(tmp_path, n=4, shard_size=2)
  _sidecar(plan, 0, 2, 0, 0, {"video_tokens": [5, 2, 2]}, ["id"], 0.0)
  _sidecar(plan, 1, 2, 0, 0, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path}: video_tokens has shape [1, 2, 2] in train.tfrecord-00001-of-00002 but "
      "[5, 2, 2] elsewhere.")):
    shards.write_manifest(plan)
  assert not (tmp_path / "manifest.json").exists()


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
  out = features.describe_component(_Described(record))
  assert out == {"class": "x.Y", "step": 3} and out is not record   # a copy
  proxy = features.describe_component(_Described(types.MappingProxyType({"version": "v2"})))
  assert proxy == {"version": "v2"} and type(proxy) is dict
  # Without describe(): the class plus the known attributes, as strings.
  assert features.describe_component(_Plain()) == {
      "class": "test_tokenize_units._Plain", "checkpoint": "/ckpt/run", "step": "7",
      "model_id": "m-1"}
  assert features.describe_component(3.5) == {"class": "builtins.float"}


def _full_features():
  """One example's features with every optional part (commit, stylization, audio, text, labels)."""
  labels = _images(1)[0]["labels"]
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
  src = _ListSource([{}], has_structure=has_structure)
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
  tok = Tokenizers(video=_Described({"class": "V", "step": 4}), audio=None, text=_Plain())
  assert runner.tokenizer_records(tok) == {
      "video": {"class": "V", "step": 4}, "audio": None,
      "text": {"class": "test_tokenize_units._Plain", "checkpoint": "/ckpt/run", "step": "7",
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
  ex = _images(1)[0]
  ex["labels"] = None                     # falsy labels are written as {}
  text, audio = _FakeText(), _FakeAudio()
  tok = Tokenizers(video=video_tok, audio=audio, text=text)
  cfg = TokenizeConfig(batch_size=2)      # masks on, but images have no COMMIT conditions
  [out] = features.encode_batch([ex], tok, cfg, stylization=True)
  want = np.asarray(video_tok.encode(_fill(ex["frames"][None], 2)))[0]
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
  clips = _clips(2)
  clips[0]["has_audio"] = True
  clips[1]["has_audio"] = False
  audio = _FakeAudio()
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
  clips = _clips(2)
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
  clips = _clips(2)
  clips[0]["audio"], clips[1]["audio"] = np.zeros(10, np.float32), np.zeros(12, np.float32)
  clips[0]["has_audio"] = clips[1]["has_audio"] = True
  with pytest.raises(ValueError, match=re.escape(
      "audio lengths differ within a batch: [10, 12] samples.")):
    features.encode_batch(clips, Tokenizers(video=video_tok, audio=_FakeAudio()),
                          TokenizeConfig(batch_size=2, masks=()), stylization=False)


def test_encode_batch_names_examples_of_different_frame_shapes():
  a = {"id": "a", "frames": np.zeros((1, 16, 16, 3), np.uint8), "caption": ""}
  b = {"id": "b", "frames": np.zeros((1, 8, 8, 3), np.uint8), "caption": ""}
  with pytest.raises(ValueError, match=re.escape("examples ['a', 'b'] have different frame shapes")):
    features.encode_batch([a, b], Tokenizers(video=None), TokenizeConfig(batch_size=2),
                          stylization=False)


# --------------------------------------------------------------------------------------------------
# shards.write_shard (real tiny MAGVIT on 16x16 images)

def test_write_shard_writes_the_shard_and_its_sidecar(tmp_path, video_tok):
  examples = _images(5)
  examples[4]["labels"] = {}                              # the last clip is unlabelled
  src = _ListSource(examples)
  cfg = TokenizeConfig(shard_size=2, batch_size=2)
  tok = Tokenizers(video=video_tok)
  plan = shards.make_plan(str(tmp_path), src, cfg, runner.tokenizer_records(tok),
                          stylization=False)
  assert plan.num_shards == 3
  batches = []
  sidecars = [shards.write_shard(plan, i, src, tok, cfg, stylization=False,
                                 on_batch=batches.append) for i in (2, 0, 1)]
  assert batches == [1, 2, 2]
  assert sidecars[0] | {"seconds": 0} == {
      "shard": "train.tfrecord-00002-of-00003", "range": [4, 5], "count": 1, "with_audio": 0,
      "labelled": 0, "shapes": {"video_tokens": [1, 2, 2], "first_frame_tokens": [1, 2, 2]},
      "features": ["caption", "first_frame_png", "first_frame_tokens", "id", "kind", "labels",
                   "video_tokens"],
      "seconds": 0, "fingerprint": plan.fingerprint}
  assert sidecars[1]["range"] == [0, 2] and sidecars[1]["count"] == 2
  assert sidecars[1]["labelled"] == 2
  assert json.loads((tmp_path / "train.tfrecord-00002-of-00003.json").read_text()) == sidecars[0]
  assert sorted(os.listdir(tmp_path)) == sorted(
      ["job.json"] + [FRAME_SHARD.format(i, 3) + s for i in range(3) for s in ("", ".json")])
  assert shards.finished_shards(plan) == {0, 1, 2}
  manifest = shards.write_manifest(plan)
  assert (manifest["num_examples"], manifest["has_labels"]) == (5, False)
  assert manifest["token_counts"] == {"video_tokens": 4, "first_frame_tokens": 4}
  # Shard 1 holds examples 2 and 3, tokenized as one batch.
  spec = features.feature_spec(manifest)
  rows = [tf.io.parse_single_example(r, spec) for r in
          tf.data.TFRecordDataset(plan.shard_path(1))]
  assert [r["id"].numpy().decode() for r in rows] == [examples[2]["id"], examples[3]["id"]]
  want = np.asarray(video_tok.encode(np.stack([examples[2]["frames"], examples[3]["frames"]])))
  for r, w in zip(rows, want):
    np.testing.assert_array_equal(r["video_tokens"].numpy(), w.ravel())
  assert json.loads(rows[0]["labels_json"].numpy()) == examples[2]["labels"]
  assert "label_colour" not in spec   # not every clip is labelled


def test_write_shard_refuses_a_source_that_gives_too_few_examples(tmp_path, video_tok):
  src = _ShortSource(_images(4))
  cfg = TokenizeConfig(shard_size=2, batch_size=2)
  plan = shards.make_plan(str(tmp_path), src, cfg, {}, stylization=False)
  with pytest.raises(RuntimeError, match=re.escape(
      "shard 1: source gave 1 examples for range [2, 4).")):
    shards.write_shard(plan, 1, src, Tokenizers(video=video_tok), cfg, stylization=False)
  assert sorted(os.listdir(tmp_path)) == ["job.json", "train.tfrecord-00001-of-00002.tmp"]
  assert shards.finished_shards(plan) == set()


def test_write_shard_refuses_examples_of_different_shapes(tmp_path, video_tok):
  clips = _clips(2)
  images = _images(2)
  src = _ListSource(clips + images)
  cfg = TokenizeConfig(shard_size=4, batch_size=2, masks=())
  plan = shards.make_plan(str(tmp_path), src, cfg, {}, stylization=False)
  with pytest.raises(ValueError, match=re.escape(
      f"{images[0]['id']}: video_tokens has shape [1, 2, 2], earlier examples [2, 2, 2].")):
    shards.write_shard(plan, 0, src, Tokenizers(video=video_tok), cfg, stylization=False)
  assert shards.finished_shards(plan) == set()
  assert not os.path.exists(plan.sidecar_path(0))
