"""vp_jax.sequence.layout.Segment: `stop`, its defaults, immutability, and the contract the layouts
keep with it (segments tile the sequence; a segment's length follows its kind and shape; its token
and shape are what `build`, `legal_ranges` and `extract` use), checked on every task."""
import dataclasses

import numpy as np
import pytest

from vp_jax.sequence import layout as L
from vp_jax.sequence.layout import Segment, Task
from vp_jax.sequence.vocab import PAPER, Special


def _layouts():
  for task in Task:
    text = None if task == Task.UNCONDITIONAL_VIDEO else True
    for frames in ((17,) if task == Task.TEXT_TO_IMAGE else (17, 41)):
      yield L.make_layout(task, num_frames=frames, with_text=text, text_length=5,
                          latent_hw=(2, 3))


def test_segment_stop_defaults_and_immutability():
  s = Segment("video_out", start=70, length=1280, kind="visual", shape=(5, 16, 16))
  assert s.stop == 1350
  assert Segment("x", 0, 0, "special").stop == 0
  bos = Segment("bos", 0, 1, "special", token=int(Special.BOS))
  assert (bos.stop, bos.token, bos.shape) == (1, Special.BOS, ())
  assert Segment("text", 3, 64, "text").token == -1                      # default: no token
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.start = 0
  # value semantics: equal fields are equal and hash alike (usable as keys)
  assert s == Segment("video_out", 70, 1280, "visual", -1, (5, 16, 16))
  assert len({s, Segment("video_out", 70, 1280, "visual", -1, (5, 16, 16))}) == 1
  assert s != dataclasses.replace(s, start=71)


def test_text_to_video_segments_by_hand():
  lay = L.make_layout(Task.TEXT_TO_VIDEO)                                # 17 frames, 128x128
  got = [(s.name, s.start, s.stop, s.kind) for s in lay.segments]
  assert got == [("bos", 0, 1, "special"), ("task", 1, 2, "special"), ("bot_i", 2, 3, "special"),
                 ("text", 3, 67, "text"), ("eot_i", 67, 68, "special"),
                 ("format", 68, 69, "special"), ("bov_o", 69, 70, "special"),
                 ("video_out", 70, 1350, "visual"), ("eov_o", 1350, 1351, "special"),
                 ("eos", 1351, 1352, "special")]
  assert lay.segment("video_out").shape == (5, 16, 16)                   # 1 + (17 - 1) / 4 frames
  assert lay.prefix_length == lay.segment("bov_o").stop == 70
  assert lay.length == lay.segments[-1].stop == 1352


@pytest.mark.parametrize("lay", list(_layouts()),
                         ids=lambda lay: f"{lay.task.value}-{lay.num_frames}")
def test_segments_tile_the_sequence_and_match_their_kind(lay):
  assert lay.segments[0].start == 0
  for a, b in zip(lay.segments, lay.segments[1:]):
    assert b.start == a.stop, (a, b)
  assert len({s.name for s in lay.segments}) == len(lay.segments)
  levels = PAPER.audio_levels
  for s in lay.segments:
    if s.kind == "special":
      assert s.length == 1 and s.token >= 0 and s.shape == ()
    elif s.kind == "text":
      assert s.length == 5 and s.token == -1
    elif s.kind == "visual":
      assert len(s.shape) == 3 and s.shape[1:] == (2, 3) and s.length == int(np.prod(s.shape))
    else:
      assert s.kind == "audio" and s.shape[0] == levels and s.length == levels * s.shape[1]
  # the prefix ends at a segment boundary: the first output's begin token
  assert any(s.stop == lay.prefix_length and s.name in ("bov_o", "boa_o") for s in lay.segments)


@pytest.mark.parametrize("task", [Task.TEXT_TO_VIDEO, Task.AUDIO_VIDEO_CONTINUATION,
                                  Task.VIDEO_TO_AUDIO])
def test_build_and_legal_ranges_read_each_segment(task):
  lay = L.make_layout(task, with_text=True, text_length=4, latent_hw=(2, 2))
  rng = np.random.default_rng(0)
  codes = {n: rng.integers(0, 4, lay.segment(n).shape) for n in lay.code_inputs}
  tokens = lay.build(codes)["tokens"]
  lo, hi = lay.legal_ranges()
  for s in lay.segments:
    ids = tokens[s.start:s.stop]
    if s.kind == "special":
      assert ids.tolist() == [s.token] and (lo[s.start], hi[s.start]) == (s.token, s.token + 1)
    elif s.kind == "text":
      assert (ids == Special.TEXT_SLOT).all()
    else:
      assert ((lo[s.start:s.stop] <= ids) & (ids < hi[s.start:s.stop])).all()
      np.testing.assert_array_equal(lay.extract(tokens)[s.name], codes[s.name])
