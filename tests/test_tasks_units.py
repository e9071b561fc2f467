"""Direct tests of the seqio task pieces on tiny hand-written tokenized datasets (a manifest and
TFRecord shards written here, no tokenizer run): TokenizedSource (splits, shard files, shard
assignment per input process, shuffling), videopoet_codes (the exact code segments of every task
from a hand-built clip), pretraining_schedule (the paper's 90/10 -> 10/90 image/video stages at
0 and 25% of the steps), register_mixtures (the exact mixture names, their rates, and the reason
for each one it cannot register) and Registration (which mixtures `registered` lists)."""
import json
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from vp_jax.data import mixing
from vp_jax.data.mixing import RateSchedule, Stage, register_schedule, schedule_for
from vp_jax.data.tokenize import features as features_lib
from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence import layout as L
from vp_jax.tasks import videopoet_mixtures as vm
from vp_jax.tasks.videopoet import Registered, TokenizedSource, register_tasks, videopoet_codes

P = "tu"            # prefix of every task, mixture and schedule this file registers
F = "_128x128_17"
LATENT = (5, 1, 2)  # 17 frames, a 1 x 2 latent grid
TEXT_LEN, TEXT_DIM, AUDIO_T = 4, 2, 17


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
  yield
  for name in list(seqio.MixtureRegistry.names()):
    if name.startswith(f"{P}_"):
      seqio.MixtureRegistry.remove(name)
  for name in list(seqio.TaskRegistry.names()):
    if name.startswith(f"{P}_"):
      seqio.TaskRegistry.remove(name)
  for name in list(mixing._SCHEDULES):
    if name.startswith(f"{P}_"):
      del mixing._SCHEDULES[name]


# -- hand-written tokenized datasets --------------------------------------------------------------
def _clip(i, *, image=False, audio=True, text=True):
  """Clip i: every token feature a distinct arange, so a wrong source feature shows."""
  shape = (1,) + LATENT[1:] if image else LATENT
  n = int(np.prod(shape))
  f = {"id": f"c{i}", "kind": "image" if image else "video", "caption": f"caption {i}",
       "video_tokens": (np.arange(n) + 10 * i).reshape(shape),
       "first_frame_tokens": (np.arange(2) + 10 * i + 500).reshape(1, 1, 2),
       "first_frame_png": b"", "labels": {}}
  if not image:
    f["commit_inpaint_central_tokens"] = (np.arange(n) + 10 * i + 200).reshape(shape)
    f["commit_outpaint_central_tokens"] = (np.arange(n) + 10 * i + 300).reshape(shape)
    f["stylization_tokens"] = (np.arange(n) + 10 * i + 400).reshape(shape)
  if audio:
    f["has_audio"] = True
    f["audio_tokens"] = (np.arange(4 * AUDIO_T) + i).reshape(4, AUDIO_T) % 256
  if text:
    emb = np.zeros((TEXT_LEN, TEXT_DIM), np.float16)
    emb[:2] = i + np.arange(4).reshape(2, 2) / 4
    f["text_embeddings"] = emb
    f["text_mask"] = np.arange(TEXT_LEN) < 2
    f["text_num_truncated"] = 0
  return f


def _write(path, clips, shard_size=2):
  """A finished tokenized dataset (docs/data_format.md): shards + manifest.json."""
  os.makedirs(path, exist_ok=True)
  num = -(-len(clips) // shard_size)
  names = [f"train.tfrecord-{i:05d}-of-{num:05d}" for i in range(num)]
  for i, name in enumerate(names):
    with tf.io.TFRecordWriter(os.path.join(path, name)) as w:
      for f in clips[i * shard_size:(i + 1) * shard_size]:
        w.write(features_lib.to_tf_example(f))
  shapes = features_lib.shapes_of(clips[0])
  feats = sorted({k for c in clips for k, v in c.items() if v is not None})
  manifest = {"format_version": features_lib.FORMAT_VERSION, "split": "train",
              "num_examples": len(clips),
              "num_with_audio": sum(bool(c.get("has_audio")) for c in clips),
              "num_shards": num, "shards": names, "shapes": shapes, "features": feats,
              "has_labels": False, "config": {}}
  with open(os.path.join(path, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  base = tmp_path_factory.mktemp("tok")
  return {"vid": _write(base / "vid", [_clip(i) for i in range(5)]),
          "img": _write(base / "img", [_clip(i, image=True, audio=False) for i in range(3)]),
          "mute": _write(base / "mute", [_clip(i, audio=False) for i in range(2)])}


def _ids(ds):
  return [e["id"].decode() for e in ds.as_numpy_iterator()]


# -- TokenizedSource ------------------------------------------------------------------------------
def test_tokenized_source_splits_and_shard_files(data):
  src = TokenizedSource({"train": data["vid"], "validation": data["img"]})
  assert isinstance(src, seqio.DataSource)
  assert tuple(src.splits) == ("train", "validation")
  assert src.list_shards("train") == ["train.tfrecord-00000-of-00003",
                                      "train.tfrecord-00001-of-00003",
                                      "train.tfrecord-00002-of-00003"]
  assert src.list_shards("validation") == ["train.tfrecord-00000-of-00002",
                                           "train.tfrecord-00001-of-00002"]
  # In file order, every clip once; each split reads its own directory.
  rows = list(src.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert [r["id"].decode() for r in rows] == ["c0", "c1", "c2", "c3", "c4"]
  for i, r in enumerate(rows):
    np.testing.assert_array_equal(r["video_tokens"], _clip(i)["video_tokens"])
    assert r["video_tokens"].dtype == np.int32 and bool(r["has_audio"])
  val = list(src.get_dataset("validation", shuffle=False).as_numpy_iterator())
  assert [v["video_tokens"].shape for v in val] == [(1, 1, 2)] * 3
  # num_epochs / use_cached / sequence_length are left to seqio: one pass, never repeated.
  assert _ids(src.get_dataset("train", shuffle=False, num_epochs=None, use_cached=True,
                              sequence_length={"tokens": 3})) == ["c0", "c1", "c2", "c3", "c4"]


def test_tokenized_source_gives_input_processes_disjoint_shard_files(data):
  src = TokenizedSource({"train": data["vid"]})
  got = [_ids(src.get_dataset("train", shuffle=False, shard_info=seqio.ShardInfo(i, 2)))
         for i in range(2)]
  assert got == [["c0", "c1", "c4"], ["c2", "c3"]]          # files 0 and 2, file 1
  got = [_ids(src.get_dataset("train", shuffle=False, shard_info=seqio.ShardInfo(i, 3)))
         for i in range(3)]
  assert got == [["c0", "c1"], ["c2", "c3"], ["c4"]]
  with pytest.raises(ValueError, match="no files for input shard 3 of 4"):
    src.get_dataset("train", shuffle=False, shard_info=seqio.ShardInfo(3, 4))


def test_tokenized_source_shuffles_files_by_seed(data):
  src = TokenizedSource({"train": data["vid"]})
  orders = {s: _ids(src.get_dataset("train", shuffle=True, seed=s)) for s in range(6)}
  for order in orders.values():
    assert sorted(order) == ["c0", "c1", "c2", "c3", "c4"]
    # Files are shuffled, not clips: each file's clips stay together and in order.
    assert order.index("c1") == order.index("c0") + 1
    assert order.index("c3") == order.index("c2") + 1
  assert orders[3] == _ids(src.get_dataset("train", shuffle=True, seed=3))   # deterministic
  assert len({tuple(o) for o in orders.values()}) > 1


# -- videopoet_codes ------------------------------------------------------------------------------
def _tf_clip(clip):
  return {k: tf.constant(v) for k, v in clip.items()
          if k.endswith("_tokens") and v is not None}


def _layout(task, **kw):
  text = {} if task == "unconditional_video" else {"with_text": True}
  return L.make_layout(task, vocab=SMALL_VOCAB, latent_hw=(1, 2), text_length=TEXT_LEN,
                       num_audio_frames=AUDIO_T, **text, **kw)


def _cases():
  c = _clip(3)
  video, audio = c["video_tokens"], c["audio_tokens"]
  return c, [
      ("unconditional_video", {}, {L.VIDEO_OUT: video}),
      ("text_to_video", {}, {L.VIDEO_OUT: video}),
      ("future_prediction", {"context_frames": 2},
       {L.VIDEO_IN: video[:2], L.VIDEO_OUT: video[2:]}),
      ("future_prediction", {"context_frames": 4},
       {L.VIDEO_IN: video[:4], L.VIDEO_OUT: video[4:]}),
      ("image_to_video", {}, {L.VIDEO_IN: video[:1], L.VIDEO_OUT: video[1:]}),
      ("inpainting", {}, {L.VIDEO_IN: c["commit_inpaint_central_tokens"], L.VIDEO_OUT: video}),
      ("outpainting", {}, {L.VIDEO_IN: c["commit_outpaint_central_tokens"], L.VIDEO_OUT: video}),
      ("stylization", {}, {L.VIDEO_IN: c["stylization_tokens"], L.VIDEO_OUT: video}),
      ("stylization", {"first_frame": True},
       {L.VIDEO_IN: c["stylization_tokens"], L.FIRST_FRAME_IN: c["first_frame_tokens"],
        L.VIDEO_OUT: video}),
      ("audio_to_video", {}, {L.AUDIO_IN: audio, L.VIDEO_OUT: video}),
      ("video_to_audio", {}, {L.VIDEO_IN: video, L.AUDIO_OUT: audio}),
      # Context: 1 latent frame = 1 of 17 pixel frames = 17 * 1 // 17 = 1 audio frame.
      ("audio_video_continuation", {},
       {L.VIDEO_IN: video[:1], L.AUDIO_IN: audio[:, :1], L.VIDEO_OUT: video[1:],
        L.AUDIO_OUT: audio[:, 1:]}),
  ]


@pytest.mark.parametrize("index", range(12))
def test_videopoet_codes_takes_each_segment_from_its_feature(index):
  clip, cases = _cases()
  task, kw, want = cases[index]
  lay = _layout(task, **kw)
  got = videopoet_codes(lay, _tf_clip(clip))
  assert sorted(got) == sorted(want) == sorted(lay.code_inputs)
  for name, value in want.items():
    np.testing.assert_array_equal(np.asarray(got[name]), value, err_msg=name)
    assert tuple(got[name].shape) == lay.segment(name).shape
  # The layout takes them as they are, and gives the whole clip's output modality back.
  back = lay.extract(lay.build({k: np.asarray(v) for k, v in got.items()})["tokens"])
  assert "video" in back or "audio" in back
  if "video" in back:
    np.testing.assert_array_equal(back["video"], clip["video_tokens"])
  if "audio" in back:
    np.testing.assert_array_equal(back["audio"], clip["audio_tokens"])


def test_videopoet_codes_text_to_image_uses_the_single_frame():
  clip = _clip(2, image=True, audio=False)
  lay = _layout("text_to_image")
  got = videopoet_codes(lay, _tf_clip(clip))
  assert list(got) == [L.VIDEO_OUT]
  np.testing.assert_array_equal(np.asarray(got[L.VIDEO_OUT]), [[[20, 21]]])


def test_videopoet_codes_inside_a_tf_function():
  clip = _clip(1)
  lay = _layout("audio_video_continuation")
  got = tf.function(lambda c: videopoet_codes(lay, c))(_tf_clip(clip))
  np.testing.assert_array_equal(got[L.VIDEO_IN].numpy(), clip["video_tokens"][:1])
  np.testing.assert_array_equal(got[L.AUDIO_OUT].numpy(), clip["audio_tokens"][:, 1:])


# -- pretraining_schedule -------------------------------------------------------------------------
VID = Registered("vid", False, tasks={"text_to_video": ["t2v_a", "t2v_b"], "inpainting": ["inp"],
                                      "future_prediction": ["fp"]})
IMG = Registered("img", True, tasks={"text_to_image": ["t2i"]})


def test_pretraining_schedule_is_the_papers_two_stages():
  assert vm.IMAGE_FIRST == ((0.0, 0.9), (0.25, 0.1))
  sched = vm.pretraining_schedule([VID, IMG])
  assert isinstance(sched, RateSchedule)
  assert [s.start_fraction for s in sched.stages] == [0.0, 0.25]
  # Image 90% then 10%; the rest uniform over the 3 video kinds present (columns), a kind's share
  # split between its tasks.
  assert dict(sched.stages[0].rates) == pytest.approx(
      {"t2i": 0.9, "t2v_a": 0.1 / 6, "t2v_b": 0.1 / 6, "inp": 0.1 / 3, "fp": 0.1 / 3})
  assert dict(sched.stages[1].rates) == pytest.approx(
      {"t2i": 0.1, "t2v_a": 0.9 / 6, "t2v_b": 0.9 / 6, "inp": 0.9 / 3, "fp": 0.9 / 3})
  assert sched.stage_index(24, 100) == 0 and sched.stage_index(25, 100) == 1


def test_pretraining_schedule_custom_stages_and_kinds_it_ignores():
  extra = Registered("x", False, tasks={"not_a_kind": ["odd"], "text_to_video": ["t2v_c"]})
  sched = vm.pretraining_schedule([VID, IMG, extra], stages=((0.0, 0.5), (0.6, 0.0)))
  assert [s.start_fraction for s in sched.stages] == [0.0, 0.6]
  first = dict(sched.stages[0].rates)
  assert "odd" not in first                                   # only the known video kinds
  # t2v's third now goes to 3 tasks (two datasets).
  assert first == pytest.approx({"t2i": 0.5, "t2v_a": 0.5 / 9, "t2v_b": 0.5 / 9,
                                 "t2v_c": 0.5 / 9, "inp": 0.5 / 3, "fp": 0.5 / 3})
  second = dict(sched.stages[1].rates)
  assert second["t2i"] == 0.0 and sum(second.values()) == pytest.approx(1.0)
  assert "t2i" not in sched.rates_at(99, 100)                 # a zero rate is never drawn


def test_pretraining_schedule_needs_video_and_image_tasks():
  with pytest.raises(vm.MissingTasks, match="pretraining needs video tasks; none registered"):
    vm.pretraining_schedule([IMG])
  with pytest.raises(vm.MissingTasks, match="no task registered for 'text_to_image'"):
    vm.pretraining_schedule([VID])


# -- register_mixtures / Registration -------------------------------------------------------------
def _rate(mixture, task):
  return seqio.get_mixture_or_task(mixture).get_rate(seqio.get_mixture_or_task(task))


def test_register_mixtures_names_and_rates(data):
  vid = register_tasks(data["vid"], vocab=SMALL_VOCAB, prefix=f"{P}_vid", overwrite=True)
  img = register_tasks(data["img"], vocab=SMALL_VOCAB, prefix=f"{P}_img", overwrite=True)
  status = vm.register_mixtures([vid, img], prefix=P, overwrite=True)
  rows = ["t2v", "t2v_i", "ssl", "no_t2i", "all", "adapt_t2v", "adapt_t2v_i2v", "adapt_v2a",
          "pretrain"]
  assert status == {f"{P}_{r}": "registered" for r in rows}
  assert list(status) == [f"{P}_{r}" for r in rows]
  t = {k: f"{P}_vid_{k}{F}" for k in vm.VIDEO_KINDS}
  t["stylization_first_frame"] = f"{P}_vid_stylization_first_frame{F}"
  t["text_to_image"] = f"{P}_img_text_to_image"
  want = {
      "t2v": {t["text_to_video"]: 1.0},
      "t2v_i": {t["text_to_image"]: 0.5, t["text_to_video"]: 0.5},
      "ssl": {t["unconditional_video"]: 0.25, t["future_prediction"]: 0.25,
              t["inpainting"]: 0.125, t["outpainting"]: 0.125,
              t["audio_video_continuation"]: 0.25},
      "no_t2i": {t["text_to_video"]: 0.2, t["unconditional_video"]: 0.2,
                 t["future_prediction"]: 0.2, t["inpainting"]: 0.1, t["outpainting"]: 0.1,
                 t["audio_video_continuation"]: 0.2},
      "all": {t["text_to_image"]: 1 / 6, t["text_to_video"]: 1 / 6,
              t["unconditional_video"]: 1 / 6, t["future_prediction"]: 1 / 6,
              t["inpainting"]: 1 / 12, t["outpainting"]: 1 / 12,
              t["audio_video_continuation"]: 1 / 6},
      "adapt_t2v": {t["text_to_image"]: 0.5, t["text_to_video"]: 0.5},
      "adapt_t2v_i2v": {t["text_to_video"]: 0.5, t["image_to_video"]: 0.5},
      "adapt_v2a": {t["video_to_audio"]: 1.0},
  }
  for row, rates in want.items():
    name = f"{P}_{row}"
    assert schedule_for(name).rates_at(0, 1) == pytest.approx(rates), row
    assert seqio.get_mixture_or_task(name).total_rate == pytest.approx(1.0)
    for task, rate in rates.items():
      assert _rate(name, task) == pytest.approx(rate), (row, task)
  # The pretraining schedule: two seqio Mixtures, image 0.9 then 0.1; 10 video kinds, the two
  # stylization variants sharing one kind's share.
  assert [s.start_fraction for s in schedule_for(f"{P}_pretrain").stages] == [0.0, 0.25]
  for stage, image in ((0, 0.9), (1, 0.1)):
    mix = f"{P}_pretrain_stage{stage}"
    assert len(seqio.get_mixture_or_task(mix).tasks) == 12
    assert _rate(mix, t["text_to_image"]) == pytest.approx(image)
    assert _rate(mix, t["text_to_video"]) == pytest.approx((1 - image) / 10)
    assert _rate(mix, t["stylization_first_frame"]) == pytest.approx((1 - image) / 20)
  with pytest.raises(ValueError, match=f"register_mixtures: '{P}_t2v', '{P}_t2v_i'"):
    vm.register_mixtures([vid, img], prefix=P)


def test_register_mixtures_refuses_a_taken_name_before_registering_any(data):
  """Only the last row's name is taken: the call raises naming it, and no earlier row (nor the
  pretraining schedule) is left registered."""
  vid = register_tasks(data["vid"], vocab=SMALL_VOCAB, prefix=f"{P}_atomic_v", overwrite=True)
  img = register_tasks(data["img"], vocab=SMALL_VOCAB, prefix=f"{P}_atomic_i", overwrite=True)
  q = f"{P}_atomic"
  v2a = vid.tasks["video_to_audio"][0]
  register_schedule(f"{q}_adapt_v2a", RateSchedule((Stage(0.0, {v2a: 1.0}),)))
  with pytest.raises(ValueError, match=(f"register_mixtures: '{q}_adapt_v2a' already registered "
                                        r"\(pass overwrite=True")):
    vm.register_mixtures([vid, img], prefix=q)
  assert [n for n in vm.ROWS if mixing.is_registered(f"{q}_{n}")] == ["adapt_v2a"]
  assert not mixing.is_registered(f"{q}_pretrain")
  assert f"{q}_t2v" not in seqio.MixtureRegistry.names()
  status = vm.register_mixtures([vid, img], prefix=q, overwrite=True)
  assert status[f"{q}_t2v"] == status[f"{q}_adapt_v2a"] == "registered"


def test_register_mixtures_says_why_a_mixture_is_missing(data):
  mute = register_tasks(data["mute"], vocab=SMALL_VOCAB, prefix=f"{P}_mute", overwrite=True)
  assert mute.skipped == {"text_to_image": "needs image data",
                          "video_to_audio": "needs clips with audio",
                          "audio_to_video": "needs clips with audio",
                          "audio_video_continuation": "needs clips with audio"}
  status = vm.register_mixtures([mute], prefix=f"{P}_m", overwrite=True)
  why = "no task registered for '{}' (per dataset: {{'{}_mute': '{}'}})."
  t2i = why.format("text_to_image", P, "needs image data")
  avc = why.format("audio_video_continuation", P, "needs clips with audio")
  assert status == {
      f"{P}_m_t2v": "registered", f"{P}_m_t2v_i": t2i, f"{P}_m_ssl": avc, f"{P}_m_no_t2i": avc,
      f"{P}_m_all": t2i, f"{P}_m_adapt_t2v": t2i, f"{P}_m_adapt_t2v_i2v": "registered",
      f"{P}_m_adapt_v2a": why.format("video_to_audio", P, "needs clips with audio"),
      f"{P}_m_pretrain": t2i}
  assert schedule_for(f"{P}_m_adapt_t2v_i2v").rates_at(0, 1) == pytest.approx(
      {f"{P}_mute_text_to_video{F}": 0.5, f"{P}_mute_image_to_video{F}": 0.5})
  for name, s in status.items():
    if s != "registered":
      assert name not in seqio.MixtureRegistry.names()
      with pytest.raises(ValueError, match="neither a registered schedule"):
        schedule_for(name)


def test_registration_lists_the_registered_mixtures_in_order(data):
  reg = vm.Registration(datasets={}, mixtures={"a": "registered", "b": "no task registered ...",
                                               "c": "registered"})
  assert reg.registered() == ["a", "c"]
  assert vm.Registration({}, {}).registered() == []
  out = vm.register_videopoet({"mute": data["mute"]}, vocab=SMALL_VOCAB, prefix=f"{P}_r",
                              overwrite=True)
  assert isinstance(out, vm.Registration)
  assert list(out.datasets) == ["mute"] and out.datasets["mute"].prefix == f"{P}_r_mute"
  assert out.registered() == [f"{P}_r_t2v", f"{P}_r_adapt_t2v_i2v"]
  assert out.datasets["mute"].names(["text_to_video"]) == [f"{P}_r_mute_text_to_video{F}"]
  src = seqio.get_mixture_or_task(f"{P}_r_mute_text_to_video{F}").source
  assert isinstance(src, TokenizedSource) and _ids(src.get_dataset(shuffle=False)) == ["c0", "c1"]
