"""VideoPoet seqio tasks over a tokenized dataset: every task's example has the paper's layout
(special tokens in order, text slots, prefix length, loss mask), its codes come from the right
features (COMMIT condition tokens from the masked video), future prediction varies its context."""
import numpy as np
import pytest
import seqio
import tensorflow as tf
from tasks_data import BATCH, TEXT_DIM, VIDEO_CFG, tokenized, tokenizers

from vp_jax.data import conditions
from vp_jax.data.lm_examples import tf_build
from vp_jax.data.synthetic import SyntheticVideos
from vp_jax.data.tokenized import read_tokenized
from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence import layout as L
from vp_jax.sequence.vocab import PAPER, Special as S
from vp_jax.tasks import videopoet

VOCAB = SMALL_VOCAB
TEXT = [S.BOT_I] + [S.TEXT_SLOT] * 64 + [S.EOT_I]
FMT = [S.FORMAT_128x128_17, S.BOV_O]
V = "V"   # a run of visual ids
A = "A"   # a run of audio ids

# Figure 3 / Table 1 order of every task, written out independently of the layout code.
EXPECTED = {
    "unconditional_video": [S.BOS, S.TASK_VIDEO, *FMT, V, S.EOV_O, S.EOS],
    "text_to_video": [S.BOS, S.TASK_VIDEO, *TEXT, *FMT, V, S.EOV_O, S.EOS],
    "text_to_image": [S.BOS, S.TASK_VIDEO, *TEXT, *FMT, V],
    "future_prediction": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, *FMT, V, S.EOV_O,
                          S.EOS],
    "image_to_video": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, *FMT, V, S.EOV_O, S.EOS],
    "inpainting": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, *FMT, V, S.EOV_O, S.EOS],
    "outpainting": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, *FMT, V, S.EOV_O, S.EOS],
    "stylization": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, *FMT, V, S.EOV_O, S.EOS],
    "stylization_first_frame": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, S.BOV_I, V,
                                S.EOV_I, *FMT, V, S.EOV_O, S.EOS],
    "audio_to_video": [S.BOS, S.TASK_VIDEO, *TEXT, S.BOA_I, A, S.EOA_I, *FMT, V, S.EOV_O, S.EOS],
    "video_to_audio": [S.BOS, S.TASK_AUDIO, *TEXT, S.BOV_I, V, S.EOV_I, S.BOA_O, A, S.EOA_O,
                       S.EOS],
    "audio_video_continuation": [S.BOS, S.TASK_AUDIO_VIDEO, *TEXT, S.BOV_I, V, S.EOV_I, S.BOA_I, A,
                                 S.EOA_I, *FMT, V, S.EOV_O, S.BOA_O, A, S.EOA_O, S.EOS],
}
# The token that closes the prefix (the first output's begin token).
PREFIX_END = {k: S.BOA_O if k == "video_to_audio" else S.BOV_O for k in EXPECTED}


def _runs(tokens):
  """Token ids -> the special ids in order, with each run of codes collapsed to V or A."""
  modality = VOCAB.modality_of(tokens)
  out = []
  for t, m in zip(tokens, modality):
    if m == 0:
      out.append(int(t))
    else:
      mark = V if m == 1 else A
      if not out or out[-1] != mark:
        out.append(mark)
  return out


@pytest.fixture(scope="module")
def registered():
  data = tokenized()
  vid = videopoet.register_tasks(data["vid"], vocab=VOCAB, prefix="t_vid", overwrite=True)
  img = videopoet.register_tasks(data["img"], vocab=VOCAB, prefix="t_img", overwrite=True)
  rows = list(read_tokenized(data["vid"]).as_numpy_iterator())
  return vid, img, rows


def _first(name, n=1, seed=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split="train", shuffle=seed is not None,
                                                   seed=seed, num_epochs=None, use_cached=False)
  return list(ds.take(n).as_numpy_iterator())


def _kind_of(name):
  for kind in EXPECTED:
    if name.startswith(f"t_vid_{kind}_128") or name.startswith(f"t_img_{kind}"):
      return kind
  raise AssertionError(name)


def test_every_kind_is_registered_with_its_names(registered):
  vid, img, _ = registered
  assert sorted(vid.tasks) == sorted(k for k in videopoet.KINDS if k != "text_to_image")
  assert vid.skipped == {"text_to_image": "needs image data"}
  assert img.tasks == {"text_to_image": ["t_img_text_to_image"]}
  assert vid.tasks["stylization"] == ["t_vid_stylization_128x128_17",
                                      "t_vid_stylization_first_frame_128x128_17"]


def test_every_task_has_the_paper_layout(registered):
  vid, img, rows = registered
  clip = rows[0]
  for reg in (vid, img):
    for name in reg.names():
      kind = _kind_of(name)
      ex = _first(name)[0]
      tokens = ex["tokens"]
      assert _runs(tokens) == EXPECTED[kind], name
      assert not np.any(tokens == S.PAD), name
      p = int(ex["prefix_length"])
      assert tokens[p - 1] == PREFIX_END[kind], name
      np.testing.assert_array_equal(ex["loss_mask"], np.arange(len(tokens)) >= p)
      slots = np.flatnonzero(tokens == S.TEXT_SLOT)
      if kind == "unconditional_video":
        assert slots.size == 0 and not ex["text_mask"].any()
        assert not ex["text_embeddings"].any()
        continue
      assert slots.size == 64 and np.all(np.diff(slots) == 1) and slots[-1] < p
      if reg is vid:   # unshuffled: the first clip (audio tasks: the first clip with audio)
        np.testing.assert_array_equal(ex["text_embeddings"], clip["text_embeddings"])
        np.testing.assert_array_equal(ex["text_mask"], clip["text_mask"])
      assert ex["text_embeddings"].shape == (64, TEXT_DIM) and ex["text_mask"].any()


def test_codes_come_from_the_right_features(registered):
  vid, _, rows = registered
  assert all(r["has_audio"] for r in rows)
  clip = rows[0]
  for name, source in [("t_vid_inpainting_128x128_17", "commit_inpaint_central_tokens"),
                       ("t_vid_outpainting_128x128_17", "commit_outpaint_central_tokens"),
                       ("t_vid_stylization_128x128_17", "stylization_tokens")]:
    lay = vid.layouts[name]
    got = lay.extract(_first(name)[0]["tokens"])
    np.testing.assert_array_equal(got[L.VIDEO_IN], clip[source])
    np.testing.assert_array_equal(got[L.VIDEO_OUT], clip["video_tokens"])
  # The COMMIT condition tokens are the tokenization of the masked video (not the video).
  # (The job's first batch, examples 0 and 1: the same compiled shapes as the job.)
  videos = SyntheticVideos(VIDEO_CFG)
  video = np.stack([videos[i]["frames"] for i in range(BATCH)])
  for kind in ("inpaint", "outpaint"):
    visible = np.broadcast_to(conditions.visible_mask(f"{kind}_central", 17, 32, 32),
                              video.shape[:4])
    cond, target = (np.asarray(x) for x in tokenizers().video.commit_encode(video, visible))
    name = f"t_vid_{kind}ing_128x128_17"
    got = vid.layouts[name].extract(_first(name)[0]["tokens"])
    np.testing.assert_array_equal(got[L.VIDEO_IN], cond[0])
    np.testing.assert_array_equal(got[L.VIDEO_OUT], target[0])
    assert np.mean(cond[0] != target[0]) > 0.1
  # Stylization with the first frame; audio tasks; continuation splits both streams.
  lay = vid.layouts["t_vid_stylization_first_frame_128x128_17"]
  got = lay.extract(_first("t_vid_stylization_first_frame_128x128_17")[0]["tokens"])
  np.testing.assert_array_equal(got[L.FIRST_FRAME_IN], clip["first_frame_tokens"])
  got = vid.layouts["t_vid_video_to_audio_128x128_17"].extract(
      _first("t_vid_video_to_audio_128x128_17")[0]["tokens"])
  np.testing.assert_array_equal(got[L.VIDEO_IN], clip["video_tokens"])
  np.testing.assert_array_equal(got[L.AUDIO_OUT], clip["audio_tokens"])
  got = vid.layouts["t_vid_audio_to_video_128x128_17"].extract(
      _first("t_vid_audio_to_video_128x128_17")[0]["tokens"])
  np.testing.assert_array_equal(got[L.AUDIO_IN], clip["audio_tokens"])
  lay = vid.layouts["t_vid_audio_video_continuation_128x128_17"]
  got = lay.extract(_first("t_vid_audio_video_continuation_128x128_17")[0]["tokens"])
  np.testing.assert_array_equal(got["video"], clip["video_tokens"])
  np.testing.assert_array_equal(got["audio"], clip["audio_tokens"])
  assert got[L.VIDEO_IN].shape == (1, 4, 4) and got[L.AUDIO_IN].shape == (4, 106 // 17)
  got = vid.layouts["t_vid_image_to_video_128x128_17"].extract(
      _first("t_vid_image_to_video_128x128_17")[0]["tokens"])
  np.testing.assert_array_equal(got[L.VIDEO_IN], clip["video_tokens"][:1])


def test_future_prediction_draws_variable_context(registered):
  vid, _, rows = registered
  by_video = {r["video_tokens"].tobytes(): r for r in rows}
  examples = _first("t_vid_future_prediction_128x128_17", n=40, seed=5)
  assert len({len(e["tokens"]) for e in examples}) == 1
  hw = 16
  contexts = set()
  for e in examples:
    p = int(e["prefix_length"])
    lay = videopoet.L.make_layout("future_prediction", vocab=VOCAB, latent_hw=(4, 4),
                                  num_frames=17, with_text=True, context_frames=(p - 71) // hw)
    assert lay.prefix_length == p
    got = lay.extract(e["tokens"])
    assert got["video"].tobytes() in by_video
    contexts.add(lay.segment(L.VIDEO_IN).shape[0])
  assert contexts == {1, 2, 3, 4}
  # Same examples for the same seed (the draw is stateless).
  again = _first("t_vid_future_prediction_128x128_17", n=40, seed=5)
  assert [e["prefix_length"] for e in again] == [e["prefix_length"] for e in examples]


def test_tf_build_equals_numpy_build():
  rng = np.random.default_rng(0)
  for task in L.Task:
    lay = L.make_layout(task, vocab=VOCAB, latent_hw=(2, 3), text_length=5,
                        **({"with_text": True} if task != L.Task.UNCONDITIONAL_VIDEO else {}))
    codes = {}
    for s in lay.segments:
      if s.kind == "visual":
        codes[s.name] = rng.integers(0, VOCAB.visual_codes, s.shape).astype(np.int32)
      elif s.kind == "audio":
        codes[s.name] = rng.integers(0, VOCAB.audio_codes_per_level, s.shape).astype(np.int32)
    ref = lay.build(codes)
    got = tf_build(lay, {k: tf.constant(v) for k, v in codes.items()})
    for key in ("tokens", "loss_mask", "prefix_length"):
      np.testing.assert_array_equal(got[key].numpy(), ref[key])


def test_codes_outside_the_vocabulary_fail_naming_the_segment():
  lay = L.make_layout("text_to_image", vocab=VOCAB, latent_hw=(2, 2))
  with pytest.raises(tf.errors.InvalidArgumentError, match="video_out.*< 1024"):
    tf_build(lay, {L.VIDEO_OUT: tf.fill([1, 2, 2], 5000)})


def test_bad_inputs_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unknown kinds"):
    videopoet.register_tasks(tokenized()["vid"], vocab=VOCAB, prefix="x", kinds=["t2v"])
  with pytest.raises(FileNotFoundError, match="not a finished"):
    videopoet.register_tasks(str(tmp_path), vocab=PAPER, prefix="x")


def test_portrait_41_frame_data_get_their_format_and_res_tokens(tmp_path):
  from vp_jax.data.synthetic import SyntheticConfig
  from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, runner
  cfg = SyntheticConfig(resolution=(56, 32), num_frames=41, num_examples=2, seed=6)
  # Only the features these two tasks read (COMMIT / stylization inputs would add compiles).
  runner.tokenize_dataset(SyntheticSource(cfg), tokenizers(), str(tmp_path),
                          TokenizeConfig(shard_size=2, batch_size=BATCH, masks=(),
                                         stylization=False), progress=False)
  reg = videopoet.register_tasks(str(tmp_path), vocab=VOCAB, prefix="t_p41", overwrite=True,
                                 kinds=["text_to_video", "audio_video_continuation"])
  assert reg.names() == ["t_p41_text_to_video_128x224_41",
                         "t_p41_audio_video_continuation_128x224_41"]
  ex = _first("t_p41_text_to_video_128x224_41")[0]
  assert len(ex["tokens"]) == 11 * 7 * 4 + 73            # + <res>
  assert _runs(ex["tokens"]) == [S.BOS, S.TASK_VIDEO, *TEXT, S.RES, S.FORMAT_128x224_41, S.BOV_O,
                                 V, S.EOV_O, S.EOS]
  lay = reg.layouts["t_p41_audio_video_continuation_128x224_41"]
  got = lay.extract(_first("t_p41_audio_video_continuation_128x224_41")[0]["tokens"])
  assert got["audio"].shape == (4, 256) and got["video"].shape == (11, 7, 4)


def test_a_user_task_registers_without_editing_the_library(registered):
  _, _, rows = registered
  lay = L.make_layout("text_to_video", vocab=VOCAB, latent_hw=(4, 4))
  videopoet.register_layout_task(
      "user_reversed_t2v", tokenized()["vid"], lay,
      lambda layout, clip: {L.VIDEO_OUT: tf.reverse(clip["video_tokens"], [0])}, overwrite=True)
  got = lay.extract(_first("user_reversed_t2v")[0]["tokens"])
  np.testing.assert_array_equal(got["video"], rows[0]["video_tokens"][::-1])


def test_input_processes_read_disjoint_shards(registered):
  _, _, rows = registered
  task = seqio.get_mixture_or_task("t_vid_text_to_video_128x128_17")
  assert len(task.source.list_shards("train")) == 2          # 6 clips, 4 per shard file
  seen = []
  for index in range(2):
    ds = task.get_dataset(None, split="train", shuffle=False, num_epochs=1, use_cached=False,
                          shard_info=seqio.ShardInfo(index=index, num_shards=2))
    seen.append([e["tokens"].tobytes() for e in ds.as_numpy_iterator()])
  assert [len(s) for s in seen] == [4, 2] and not set(seen[0]) & set(seen[1])
  lay = L.make_layout("text_to_video", vocab=VOCAB, latent_hw=(4, 4), with_text=True)
  expected = {lay.build({L.VIDEO_OUT: r["video_tokens"]})["tokens"].tobytes() for r in rows}
  assert set(seen[0]) | set(seen[1]) == expected
