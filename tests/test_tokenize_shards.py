"""Direct unit tests of the tokenization job's shards (vp_jax.data.tokenize.shards): the plan's names
and ranges, job.json and its fingerprint, finished shards, the manifest, and write_shard on a real
in-memory MAGVIT-v2 `tiny`. The whole-pipeline behaviour is tests/test_data_tokenize.py's."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from vp_jax.data.tokenize import features, runner, shards
from vp_jax.data.tokenize.features import TokenizeConfig, Tokenizers
from tokenize_fakes import (FRAME_SHARD, ListSource, ShortSource, small_plan, synthetic_clips,
                            synthetic_images, write_text)
from tokenize_fakes import video_tok  # noqa: F401  (pytest fixture)


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
  plan = small_plan(out, n=9, shard_size=4, split="validation")
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
                 "box_fraction": 0.5, "flow_max": 0.0625, "text_dtype": "float16"},
      "stylization": False, "tokenizers": {"video": {"class": "V"}}}
  assert plan.job == {k: v for k, v in job.items() if k != "fingerprint"} | {
      "config": {k: v for k, v in TokenizeConfig(shard_size=4).output_affecting().items()
                 if k != "stylization"}}
  # Same job again (in the same or another directory): the same fingerprint, job.json untouched.
  before = (out / "job.json").read_bytes()
  assert small_plan(out, n=9, shard_size=4, split="validation").fingerprint == plan.fingerprint
  assert (out / "job.json").read_bytes() == before
  assert small_plan(tmp_path / "b", n=9, shard_size=4, split="validation").fingerprint == \
      plan.fingerprint
  # The batch size does not change the bytes written, so it is not part of the job.
  src = ListSource([{"id": str(i)} for i in range(9)], split="validation")
  again = shards.make_plan(str(out), src, TokenizeConfig(shard_size=4, batch_size=3),
                           {"video": {"class": "V"}}, stylization=False)
  assert again.fingerprint == plan.fingerprint
  # stylization=None resolved to False is the same job as stylization=False (same bytes written);
  # a different resolved value is not.
  explicit = shards.make_plan(str(out), src, TokenizeConfig(shard_size=4, stylization=False),
                              {"video": {"class": "V"}}, stylization=False)
  assert explicit.fingerprint == plan.fingerprint
  with pytest.raises(shards.JobMismatchError, match="different tokenization job"):
    shards.make_plan(str(out), src, TokenizeConfig(shard_size=4), {"video": {"class": "V"}},
                     stylization=True)


def test_make_plan_defaults_the_split_to_train(tmp_path):
  class NoSplit(ListSource):
    def describe(self):
      return {"type": "nosplit"}
  plan = shards.make_plan(str(tmp_path), NoSplit([{}] * 3), TokenizeConfig(shard_size=2), {},
                          stylization=False)
  assert (plan.split, plan.num_shards, plan.shard_range(1)) == ("train", 2, (2, 3))


@pytest.mark.parametrize("change", ["source", "shard_size", "box_fraction", "masks", "stylization",
                                    "tokenizers"])
def test_make_plan_refuses_a_directory_of_a_different_job(tmp_path, change):
  records = {"video": {"class": "V", "step": 1}}
  plan = shards.make_plan(str(tmp_path), ListSource([{}] * 5), TokenizeConfig(shard_size=2),
                          records, stylization=False)
  before = (tmp_path / "job.json").read_bytes()
  args = dict(source=ListSource([{}] * 5), config=TokenizeConfig(shard_size=2),
              tokenizer_records=records, stylization=False)
  if change == "source":
    args["source"] = ListSource([{}] * 5, seed=2)
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
    shards.make_plan(str(out), ListSource([], path="/x/empty"), TokenizeConfig(), {},
                     stylization=False)
  assert not out.exists()   # nothing written


# --------------------------------------------------------------------------------------------------
# shards.finished_shards / write_manifest

def test_finished_shards_needs_both_the_shard_and_its_sidecar(tmp_path):
  plan = small_plan(tmp_path, n=10, shard_size=2)   # 5 shards
  assert shards.finished_shards(plan) == set()
  write_text(plan.shard_path(0)); write_text(plan.sidecar_path(0))    # finished
  write_text(plan.shard_path(1))                                  # renamed, sidecar not yet written
  write_text(plan.sidecar_path(2))                                # sidecar without its shard
  write_text(plan.shard_path(3) + ".tmp")                         # a killed run's temporary
  write_text(plan.shard_path(4)); write_text(plan.sidecar_path(4))    # finished
  assert shards.finished_shards(plan) == {0, 4}
  write_text(plan.sidecar_path(1))
  assert shards.finished_shards(plan) == {0, 1, 4}


def _sidecar(plan, i, count, with_audio, labelled, shapes, feats, seconds):
  start, stop = plan.shard_range(i)
  s = {"shard": plan.shard_name(i), "range": [start, stop], "count": count,
       "with_audio": with_audio, "labelled": labelled, "shapes": shapes, "features": feats,
       "seconds": seconds, "fingerprint": plan.fingerprint}
  write_text(plan.shard_path(i))
  write_text(plan.sidecar_path(i), json.dumps(s))


def test_write_manifest_lists_the_unfinished_shards(tmp_path):
  plan = small_plan(tmp_path, n=10, shard_size=2)
  shapes = {"video_tokens": [1, 2, 2]}
  _sidecar(plan, 0, 2, 0, 2, shapes, ["id"], 0.1)
  _sidecar(plan, 2, 2, 0, 2, shapes, ["id"], 0.1)
  write_text(plan.shard_path(1))            # no sidecar: unfinished
  write_text(plan.sidecar_path(4))          # no shard: unfinished
  with pytest.raises(RuntimeError, match=re.escape(
      f"{tmp_path}: shards [1, 3, 4] are not finished; rerun the job.")):
    shards.write_manifest(plan)
  assert not (tmp_path / "manifest.json").exists()


def test_write_manifest_sums_the_sidecars(tmp_path):
  plan = small_plan(tmp_path, n=9, shard_size=4)   # shards of 4, 4, 1
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
      "config": {"shard_size": 4, "masks": ("inpaint_central", "outpaint_central"),
                 "box_fraction": 0.5, "flow_max": 0.0625, "text_dtype": "float16"},
      "stylization": True, "tokenizers": {"video": {"class": "V"}},
      "tokenize_seconds": 3.75}   # 1.25 + 2.5 + 0.0004 rounded to ms
  on_disk = json.loads((tmp_path / "manifest.json").read_text())
  assert on_disk == json.loads(json.dumps(manifest))
  assert not (tmp_path / "manifest.json.tmp").exists()


def test_write_manifest_has_labels_only_if_every_example_is_labelled(tmp_path):
  plan = small_plan(tmp_path, n=4, shard_size=2)
  _sidecar(plan, 0, 2, 0, 2, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  _sidecar(plan, 1, 2, 0, 1, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  manifest = shards.write_manifest(plan)
  assert manifest["has_labels"] is False and manifest["stylization"] is False
  assert manifest["num_examples"] == 4 and manifest["token_counts"] == {"video_tokens": 4}


def test_write_manifest_rejects_shards_of_different_shapes(tmp_path):
  plan = small_plan(tmp_path, n=4, shard_size=2)
  _sidecar(plan, 0, 2, 0, 0, {"video_tokens": [5, 2, 2]}, ["id"], 0.0)
  _sidecar(plan, 1, 2, 0, 0, {"video_tokens": [1, 2, 2]}, ["id"], 0.0)
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path}: video_tokens has shape [1, 2, 2] in train.tfrecord-00001-of-00002 but "
      "[5, 2, 2] elsewhere.")):
    shards.write_manifest(plan)
  assert not (tmp_path / "manifest.json").exists()


# --------------------------------------------------------------------------------------------------
# shards.write_shard (real tiny MAGVIT on 16x16 images)

def test_write_shard_writes_the_shard_and_its_sidecar(tmp_path, video_tok):
  examples = synthetic_images(5)
  examples[4]["labels"] = {}                              # the last clip is unlabelled
  src = ListSource(examples)
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
  src = ShortSource(synthetic_images(4))
  cfg = TokenizeConfig(shard_size=2, batch_size=2)
  plan = shards.make_plan(str(tmp_path), src, cfg, {}, stylization=False)
  with pytest.raises(RuntimeError, match=re.escape(
      "shard 1: source gave 1 examples for range [2, 4).")):
    shards.write_shard(plan, 1, src, Tokenizers(video=video_tok), cfg, stylization=False)
  assert sorted(os.listdir(tmp_path)) == ["job.json", "train.tfrecord-00001-of-00002.tmp"]
  assert shards.finished_shards(plan) == set()


def test_write_shard_refuses_examples_of_different_shapes(tmp_path, video_tok):
  clips = synthetic_clips(2)
  images = synthetic_images(2)
  src = ListSource(clips + images)
  cfg = TokenizeConfig(shard_size=4, batch_size=2, masks=())
  plan = shards.make_plan(str(tmp_path), src, cfg, {}, stylization=False)
  with pytest.raises(ValueError, match=re.escape(
      f"{images[0]['id']}: video_tokens has shape [1, 2, 2], earlier examples [2, 2, 2].")):
    shards.write_shard(plan, 0, src, Tokenizers(video=video_tok), cfg, stylization=False)
  assert shards.finished_shards(plan) == set()
  assert not os.path.exists(plan.sidecar_path(0))
