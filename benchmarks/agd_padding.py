"""Padding ratio of VideoPoet's task mixtures: AGD (one task and length per batch) vs. batches that
mix tasks and pad to the longest sequence, at the paper's shapes (17 frames, 128x128, text).

    .venv/bin/python benchmarks/agd_padding.py

Pure layout arithmetic (vp_jax.sequence.layout): the expected padding of a mixed batch is
1 - E[L] / max L over the mixture's rates (a large batch holds the longest task almost surely).
"""
from __future__ import annotations

import sys

from vp_jax.sequence import layout as L

KINDS = {  # kind -> layout kwargs at the paper's 17-frame 128x128 format
    "text_to_image": dict(with_text=True),
    "text_to_video": dict(with_text=True),
    "unconditional_video": dict(),
    "future_prediction": dict(with_text=True),
    "image_to_video": dict(with_text=True),
    "inpainting": dict(with_text=True),
    "outpainting": dict(with_text=True),
    "stylization": dict(with_text=True),
    "audio_to_video": dict(with_text=True),
    "video_to_audio": dict(with_text=True),
    "audio_video_continuation": dict(with_text=True),
}
MIXTURES = {  # Table 2 columns (Painting = both) and the two pretraining stages
    "all": {"text_to_image": 1 / 6, "text_to_video": 1 / 6, "unconditional_video": 1 / 6,
            "future_prediction": 1 / 6, "inpainting": 1 / 12, "outpainting": 1 / 12,
            "audio_video_continuation": 1 / 6},
    "pretrain_stage0": {"text_to_image": 0.9, **{k: 0.01 for k in KINDS if k != "text_to_image"}},
    "pretrain_stage1": {"text_to_image": 0.1, **{k: 0.09 for k in KINDS if k != "text_to_image"}},
}


def main(argv=()) -> dict[str, float]:
  del argv
  lengths = {k: L.make_layout(k, **kw).length for k, kw in KINDS.items()}
  for k, n in lengths.items():
    print(f"{k:26s} {n:6d} tokens")
  out = {}
  for name, rates in MIXTURES.items():
    mean = sum(r * lengths[k] for k, r in rates.items()) / sum(rates.values())
    longest = max(lengths[k] for k in rates)
    out[name] = 1 - mean / longest
    print(f"{name:16s} padded-to-longest padding ratio {out[name]:.3f}   AGD 0.000")
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
