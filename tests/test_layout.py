"""Task layouts (paper Figure 3): token counts, round trips, loss masks, omitted modalities."""
import numpy as np
import pytest

from vp_jax.sequence import layout as L
from vp_jax.sequence.layout import Task
from vp_jax.sequence.vocab import PAPER, Special


def _random_codes(layout, rng):
  codes = {}
  for name in layout.code_inputs:
    seg = layout.segment(name)
    high = PAPER.visual_codes if seg.kind == "visual" else PAPER.audio_codes_per_level
    codes[name] = rng.integers(0, high, seg.shape)
  return codes


def _text(task):
  return None if task == Task.UNCONDITIONAL_VIDEO else True


ALL_VARIANTS = [(t, r, f) for t in Task for r in ("128x128", "128x224") for f in (17, 41)
                if not (t == Task.TEXT_TO_IMAGE and (r, f) != ("128x128", 17))]


@pytest.mark.parametrize("task,resolution,frames", ALL_VARIANTS)
def test_round_trip_and_loss_mask(task, resolution, frames):
  lay = L.make_layout(task, resolution=resolution, num_frames=frames, with_text=_text(task))
  rng = np.random.default_rng(0)
  codes = _random_codes(lay, rng)
  ex = lay.build(codes)
  assert ex["tokens"].shape == (lay.length,) and ex["tokens"].dtype == np.int32
  back = lay.extract(ex["tokens"])
  for name, grid in codes.items():
    np.testing.assert_array_equal(back[name], grid)
  # The loss covers exactly the outputs: everything after the first output's begin token.
  np.testing.assert_array_equal(np.flatnonzero(ex["loss_mask"]),
                                np.arange(lay.prefix_length, lay.length))
  assert ex["tokens"][lay.prefix_length - 1] in (Special.BOV_O, Special.BOA_O)
  outputs = [s for s in lay.segments if s.start >= lay.prefix_length]
  assert {s.name for s in outputs if s.kind != "special"} <= {L.VIDEO_OUT, L.AUDIO_OUT}
  assert ex["tokens"][0] == Special.BOS
  # The reserved text slots come right after <bot_i>.
  start, n = lay.text_slots()
  if n:
    assert ex["tokens"][start - 1] == Special.BOT_I and n == 64
    assert np.all(ex["tokens"][start:start + n] == Special.TEXT_SLOT)
  # <res> only for the portrait resolution.
  has_video_out = lay.has(L.VIDEO_OUT)
  assert (Special.RES in ex["tokens"]) == (has_video_out and resolution == "128x224")
  # Full grids recovered for the clip.
  if has_video_out:
    assert back["video"].shape == lay.latent_shape
  if lay.audio_shape is not None and lay.has(L.AUDIO_OUT):
    assert back["audio"].shape == lay.audio_shape


def test_paper_token_counts():
  t2v = L.make_layout(Task.TEXT_TO_VIDEO)
  assert t2v.segment(L.VIDEO_OUT).shape == (5, 16, 16) and t2v.segment(L.VIDEO_OUT).length == 1280
  portrait = L.make_layout(Task.TEXT_TO_VIDEO, resolution="128x224")
  assert portrait.segment(L.VIDEO_OUT).shape == (5, 28, 16)
  assert portrait.segment(L.VIDEO_OUT).length == 2240
  t2i = L.make_layout(Task.TEXT_TO_IMAGE)
  assert t2i.segment(L.VIDEO_OUT).length == 256
  v2a = L.make_layout(Task.VIDEO_TO_AUDIO)
  assert v2a.segment(L.AUDIO_OUT).shape == (4, 106) and v2a.segment(L.AUDIO_OUT).length == 424
  long = L.make_layout(Task.UNCONDITIONAL_VIDEO, num_frames=41)
  assert long.segment(L.VIDEO_OUT).shape == (11, 16, 16)
  assert L.audio_frames(41) == 256 and L.audio_frames(17) == 106
  # Text-to-video: bos task bot_i text(64) eot_i format bov_o | 1280 eov_o eos.
  assert t2v.length == 1 + 1 + 1 + 64 + 1 + 1 + 1 + 1280 + 1 + 1
  assert t2v.prefix_length == 70


def test_absent_modalities_are_omitted_with_their_markers():
  uncond = L.make_layout(Task.UNCONDITIONAL_VIDEO)
  names = [s.name for s in uncond.segments]
  assert names == ["bos", "task", "format", "bov_o", L.VIDEO_OUT, "eov_o", "eos"]
  v2a = L.make_layout(Task.VIDEO_TO_AUDIO)
  assert not v2a.has("format") and not v2a.has("bot_i") and not v2a.has("bov_o")
  assert v2a.build(_random_codes(v2a, np.random.default_rng(1)))["tokens"][1] == Special.TASK_AUDIO
  with pytest.raises(L.LayoutError, match="takes no text"):
    L.make_layout(Task.UNCONDITIONAL_VIDEO, with_text=True)
  with pytest.raises(L.LayoutError, match="requires text"):
    L.make_layout(Task.TEXT_TO_VIDEO, with_text=False)


def test_text_to_image_has_no_end_tokens_and_shares_the_video_format():
  t2i = L.make_layout(Task.TEXT_TO_IMAGE)
  t2v = L.make_layout(Task.TEXT_TO_VIDEO)
  assert not t2i.has("eos") and not t2i.has("eov_o")
  assert t2i.length == t2i.segment(L.VIDEO_OUT).stop
  # Same prefix as text-to-video: the model does not tell images from videos.
  assert t2i.prefix_length == t2v.prefix_length
  ti = t2i.build(_random_codes(t2i, np.random.default_rng(0)))["tokens"]
  tv = t2v.build(_random_codes(t2v, np.random.default_rng(0)))["tokens"]
  np.testing.assert_array_equal(ti[:t2i.prefix_length], tv[:t2v.prefix_length])
  assert t2i.stop_tokens() == ()


def test_continuation_tasks_join_context_and_output():
  fp = L.make_layout(Task.FUTURE_PREDICTION)
  assert fp.segment(L.VIDEO_IN).shape == (2, 16, 16)        # 5 frames = 2 latent frames (K600)
  assert fp.segment(L.VIDEO_OUT).shape == (3, 16, 16)
  codes = _random_codes(fp, np.random.default_rng(2))
  video = fp.extract(fp.build(codes)["tokens"])["video"]
  np.testing.assert_array_equal(video, np.concatenate([codes[L.VIDEO_IN], codes[L.VIDEO_OUT]]))
  i2v = L.make_layout(Task.IMAGE_TO_VIDEO)
  assert i2v.segment(L.VIDEO_IN).shape == (1, 16, 16)
  av = L.make_layout(Task.AUDIO_VIDEO_CONTINUATION)
  # First frame (1/8 s) and its audio: floor(1 x 106 / 17) = 6 audio frames of context.
  assert av.segment(L.AUDIO_IN).shape == (4, 6) and av.segment(L.AUDIO_OUT).shape == (4, 100)
  codes = _random_codes(av, np.random.default_rng(3))
  out = av.extract(av.build(codes)["tokens"])
  assert out["audio"].shape == (4, 106) and out["video"].shape == (5, 16, 16)
  # An <eov_o> followed by an audio output does not stop generation.
  assert av.stop_tokens() == (Special.EOS, Special.EOA_O)


def test_stylization_with_first_frame():
  lay = L.make_layout(Task.STYLIZATION, first_frame=True)
  assert lay.segment(L.FIRST_FRAME_IN).shape == (1, 16, 16)
  assert [s.name for s in lay.segments].count("bov_i") == 1
  codes = _random_codes(lay, np.random.default_rng(4))
  back = lay.extract(lay.build(codes)["tokens"])
  np.testing.assert_array_equal(back[L.FIRST_FRAME_IN], codes[L.FIRST_FRAME_IN])


def test_legal_ranges_follow_the_segments():
  lay = L.make_layout(Task.AUDIO_VIDEO_CONTINUATION)
  lo, hi = lay.legal_ranges()
  vid = lay.segment(L.VIDEO_OUT)
  assert (lo[vid.start], hi[vid.stop - 1]) == PAPER.visual_range()
  aud = lay.segment(L.AUDIO_OUT)
  per = aud.shape[1]
  for level in range(4):
    assert (lo[aud.start + level * per], hi[aud.start + (level + 1) * per - 1]) == \
        PAPER.audio_range(level)
  eos = lay.segment("eos").start
  assert (lo[eos], hi[eos]) == (Special.EOS, Special.EOS + 1)
  # Every built token lies in its position's legal range.
  ex = lay.build(_random_codes(lay, np.random.default_rng(5)))["tokens"]
  assert np.all((ex >= lo) & (ex < hi))


def test_bad_inputs_name_the_segment():
  lay = L.make_layout(Task.TEXT_TO_VIDEO)
  with pytest.raises(L.LayoutError, match=r"video_out must have shape \(5, 16, 16\)"):
    lay.build({L.VIDEO_OUT: np.zeros((4, 16, 16), np.int32)})
  with pytest.raises(L.LayoutError, match="missing"):
    lay.build({})
  with pytest.raises(L.LayoutError, match="1 \\+ 4k"):
    L.latent_frames(16)
  with pytest.raises(L.LayoutError, match="17 and 41"):
    L.make_layout(Task.TEXT_TO_VIDEO, num_frames=21)
  tokens = lay.build({L.VIDEO_OUT: np.zeros((5, 16, 16), np.int32)})["tokens"]
  tokens[lay.segment("eos").start] = Special.PAD
  with pytest.raises(L.LayoutError, match="must be EOS"):
    lay.extract(tokens)


def test_prefix_matches_the_built_example():
  lay = L.make_layout(Task.INPAINTING)
  codes = _random_codes(lay, np.random.default_rng(6))
  np.testing.assert_array_equal(lay.prefix({L.VIDEO_IN: codes[L.VIDEO_IN]}),
                                lay.build(codes)["tokens"][:lay.prefix_length])


def test_pixel_frames_inverts_the_latent_count():
  assert [L.pixel_frames(n) for n in (1, 2, 5, 11)] == [1, 5, 17, 41]
