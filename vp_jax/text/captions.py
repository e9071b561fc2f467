"""A deterministic caption grammar for the built-in demo's text side (colours, shapes, motions...).

The demo SentencePiece model is trained on these sentences; the synthetic video dataset
(vp_jax/data/synthetic/) describes its clips with the same kind of words. Any other text still
tokenizes (the demo vocabulary falls back to bytes), just less compactly.
"""
from __future__ import annotations

import math

SIZES = ("tiny", "small", "medium", "large", "big")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan", "magenta",
           "white", "black", "gray", "brown")
SHAPES = ("circle", "square", "triangle", "rectangle", "star", "diamond", "ring", "cross", "ball",
          "disk", "cube", "hexagon")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "moves diagonally",
           "bounces", "rotates", "spins", "stays still", "grows", "shrinks", "zooms in",
           "zooms out", "falls", "rises", "slides left", "slides right", "circles around",
           "moves slowly", "moves quickly")
PLURAL_MOTIONS = ("move left", "move right", "move up", "move down", "bounce", "rotate", "collide",
                  "pass each other", "swap places", "orbit each other")
BACKGROUNDS = COLOURS + ("dark", "light", "striped", "checkered", "noisy", "gradient", "plain")
PLACES = ("over a {bg} background", "on a {bg} background", "in front of a {bg} background")


def _pick(index: int, *choices: tuple) -> list:
  """Mixed-radix decoding of `index` into one element of each tuple."""
  out = []
  for options in choices:
    index, r = divmod(index, len(options))
    out.append(options[r])
  return out


def demo_captions(num_single: int = 4000, num_pairs: int = 1000) -> list[str]:
  """`num_single` one-object and `num_pairs` two-object captions, distinct, the same every call.

  The i-th caption decodes (i * prime) mod (number of combinations): a fixed permutation that
  spreads consecutive captions over all words.
  """
  single = (SIZES, COLOURS, SHAPES, MOTIONS, BACKGROUNDS, PLACES)
  pair = (COLOURS, SHAPES, COLOURS, SHAPES, PLURAL_MOTIONS, BACKGROUNDS)
  n_single, n_pair = (math.prod(len(c) for c in single), math.prod(len(c) for c in pair))
  if not (0 <= num_single <= n_single and 0 <= num_pairs <= n_pair):
    raise ValueError(f"demo_captions: at most {n_single} single and {n_pair} pair captions.")
  out = []
  for i in range(num_single):
    size, colour, shape, motion, bg, place = _pick((i * 7919) % n_single, *single)
    out.append(f"a {size} {colour} {shape} {motion} {place.format(bg=bg)}")
  for i in range(num_pairs):
    c1, s1, c2, s2, motion, bg = _pick((i * 104729) % n_pair, *pair)
    out.append(f"a {c1} {s1} and a {c2} {s2} {motion} over a {bg} background")
  return out
