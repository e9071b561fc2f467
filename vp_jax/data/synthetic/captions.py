"""Captions from templates, built only from a scene's labels so that they always agree with them.

Several phrasings per fact give the text encoder some variety; every phrasing of a fact contains its
key word (the colour and shape names, the direction, "bounc" iff the object bounces, "spinning
clockwise"/"counterclockwise" iff it spins, "camera pans <dir>" iff the camera moves), which is what
`caption_mentions` checks and the evaluation's detectors rely on.
"""
from __future__ import annotations

import numpy as np

_MOVE = ("moves {d}", "slides {d}", "travels {d}")
_MOVE_FAST = ("moves {d} quickly", "rushes {d}", "moves {d} fast")
_MOVE_SLOW = ("moves {d} slowly", "drifts {d}", "moves slowly {d}")
_BOUNCE = (" and bounces off the edge", ", bouncing off the border", " and bounces back")
_STILL = ("stays still", "rests in place", "does not move")
_SPIN = (" while spinning {r}", ", spinning {r},")
_BG = (" over a {b} background", " on a {b} background", " in front of a {b} background")
_PATTERN = {"plain": "", "checker": " checkered", "stripes": " striped"}
_CAMERA = (", the camera pans {c}", " as the camera pans {c}")
_IMAGE = ("a {s} {c} {sh}", "a picture of a {s} {c} {sh}", "a {c} {sh}, {s} in size")


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
  return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _object_clause(obj: dict, rng, bounces: int) -> str:
  noun = _article(f"{obj['size']} {obj['colour']} {obj['shape']}")
  if obj["direction"] == "none":
    verb = _pick(rng, _STILL)
  else:
    verb = _pick(rng, _MOVE_FAST if obj["speed"] == "fast" else _MOVE_SLOW if
                 rng.uniform() < 0.5 else _MOVE).format(d=obj["direction"])
    if bounces:
      verb += _pick(rng, _BOUNCE)
  if obj["rotation"] != "none":
    verb += _pick(rng, _SPIN).format(r=obj["rotation"]).rstrip(",")
  return f"{noun} {verb}"


def video_caption(labels: dict, rng: np.random.Generator) -> str:
  """labels: the dict of `SyntheticVideos.labels` (objects, background, pattern, camera)."""
  clauses = [_object_clause(o, rng, o["bounces"]) for o in labels["objects"]]
  text = " and ".join(clauses)
  text += _pick(rng, _BG).format(b=(_PATTERN[labels["pattern"]] + " " +
                                    labels["background"]).strip())
  if labels["camera"] != "none":
    text += _pick(rng, _CAMERA).format(c=labels["camera"])
  return text


def image_caption(labels: dict, rng: np.random.Generator) -> str:
  parts = []
  for o in labels["objects"]:
    parts.append(_pick(rng, _IMAGE).format(s=o["size"], c=o["colour"], sh=o["shape"]))
  text = " and ".join(parts)
  return text + _pick(rng, _BG).format(b=(_PATTERN[labels["pattern"]] + " " +
                                           labels["background"]).strip())


def caption_mentions(caption: str, labels: dict) -> list[str]:
  """The facts of `labels` that `caption` fails to state (or states wrongly); [] when it agrees."""
  problems = []
  text = caption.lower()
  for o in labels["objects"]:
    for key in ("colour", "shape", "size"):
      if o[key] not in text:
        problems.append(f"{key}={o[key]}")
    if o["direction"] != "none" and o["direction"] not in text.replace(
        "camera pans " + labels["camera"], ""):
      problems.append(f"direction={o['direction']}")
  moving_bounces = any(o.get("bounces", 0) for o in labels["objects"])
  if ("bounc" in text) != moving_bounces:
    problems.append(f"bounces={[o.get('bounces', 0) for o in labels['objects']]}")
  for r in ("clockwise", "counterclockwise"):
    spins = any(o["rotation"] == r for o in labels["objects"])
    said = (f"spinning {r}" in text)
    if spins != said:
      problems.append(f"rotation={r}")
  if labels["background"] not in text:
    problems.append(f"background={labels['background']}")
  if labels.get("camera", "none") != "none":
    if f"camera pans {labels['camera']}" not in text:
      problems.append(f"camera={labels['camera']}")
  elif "camera" in text:
    problems.append("camera=none")
  return problems
