"""Caption templates, one function at a time: `image_caption` and `video_caption` give exactly the
hand-listed phrasings for given labels (every one of them over many seeds, nothing else), the same
caption for the same seed, and the words the labels call for (speed, bounce, spin, pattern,
camera)."""
import itertools

import numpy as np

from vp_jax.data.synthetic.captions import image_caption, video_caption

BG_PHRASES = ("over a {b} background", "on a {b} background", "in front of a {b} background")


def _obj(**kw):
  o = dict(shape="square", colour="red", size="large", direction="left", speed="fast",
           rotation="none", bounces=0)
  o.update(kw)
  return o


def _labels(objects, background="navy", pattern="plain", camera="none"):
  return {"objects": objects, "background": background, "pattern": pattern, "camera": camera}


def _all_captions(fn, labels, n=3000):
  return {fn(labels, np.random.default_rng(seed)) for seed in range(n)}


def _backgrounds(b):
  return [p.format(b=b) for p in BG_PHRASES]


def test_image_caption_is_one_of_the_listed_phrasings():
  labels = _labels([_obj(size="small", colour="blue", shape="circle")], background="gray")
  nouns = ["a small blue circle", "a picture of a small blue circle",
           "a blue circle, small in size"]
  expected = {f"{n} {b}" for n, b in itertools.product(nouns, _backgrounds("gray"))}
  assert _all_captions(image_caption, labels, n=400) == expected


def test_image_caption_joins_objects_and_names_the_pattern():
  labels = _labels([_obj(size="small", colour="blue", shape="circle"),
                    _obj(size="medium", colour="white", shape="cross")],
                   background="dark green", pattern="checker")
  caption = image_caption(labels, np.random.default_rng(7))
  first, rest = caption.split(" and ", 1)
  assert first in ("a small blue circle", "a picture of a small blue circle",
                   "a blue circle, small in size")
  assert any(rest == f"{n} {b}" for n, b in itertools.product(
      ("a medium white cross", "a picture of a medium white cross",
       "a white cross, medium in size"),
      _backgrounds("checkered dark green")))
  assert image_caption(labels, np.random.default_rng(7)) == caption
  striped = image_caption(_labels(labels["objects"], "maroon", "stripes"), np.random.default_rng(0))
  assert "striped maroon background" in striped and "  " not in striped


def test_video_caption_still_object():
  labels = _labels([_obj(size="medium", colour="yellow", shape="triangle", direction="none",
                         speed="none")], background="black")
  expected = {f"a medium yellow triangle {v} {b}" for v, b in itertools.product(
      ("stays still", "rests in place", "does not move"), _backgrounds("black"))}
  assert _all_captions(video_caption, labels, n=400) == expected


def test_video_caption_fast_bouncing_spinning_with_camera():
  labels = _labels([_obj(direction="left", speed="fast", rotation="clockwise", bounces=2)],
                   background="brown", pattern="stripes", camera="up")
  moves = ("moves left quickly", "rushes left", "moves left fast")
  bounce = (" and bounces off the edge", ", bouncing off the border", " and bounces back")
  spin = (" while spinning clockwise", ", spinning clockwise")
  camera = (", the camera pans up", " as the camera pans up")
  expected = {f"a large red square {m}{bo}{s} {b}{c}" for m, bo, s, b, c in itertools.product(
      moves, bounce, spin, _backgrounds("striped brown"), camera)}
  assert len(expected) == 108
  assert _all_captions(video_caption, labels) == expected


def test_video_caption_slow_object_without_bounce():
  labels = _labels([_obj(colour="cyan", shape="circle", size="small", direction="down",
                         speed="slow", bounces=0)], background="gray")
  verbs = ("moves down slowly", "drifts down", "moves slowly down",      # the slow phrasings
           "moves down", "slides down", "travels down")                  # or the plain ones
  expected = {f"a small cyan circle {v} {b}" for v, b in itertools.product(
      verbs, _backgrounds("gray"))}
  got = _all_captions(video_caption, labels, n=600)
  assert got == expected
  assert not any("bounc" in c or "camera" in c or "spinning" in c for c in got)


def test_video_caption_two_objects_each_with_its_own_facts():
  labels = _labels([_obj(colour="red", direction="right", speed="fast", bounces=1),
                    _obj(colour="green", shape="circle", size="small", direction="none",
                         speed="none", rotation="none", bounces=0)],
                   background="navy", camera="none")
  for seed in range(50):
    caption = video_caption(labels, np.random.default_rng(seed))
    assert caption == video_caption(labels, np.random.default_rng(seed))
    first, second = caption.split(" and a small green circle ")
    assert first.startswith("a large red square ") and "right" in first and "bounc" in first
    assert "bounc" not in second and any(second.startswith(v) for v in (
        "stays still", "rests in place", "does not move"))
    assert second.endswith(" navy background") and "camera" not in caption
