"""Small tokenized datasets for the seqio task tests, made once per test process.

The tokenization job (vp_jax.data.tokenize) runs on the synthetic set with the test stand-in
tokenizers, narrowed to the CPU LM vocabulary (2^10 visual codes, 4 x 256 audio codes) and a
32-wide text encoder (the `tiny` LM preset's text_dim): a 17-frame 32x32 video dataset with audio,
flow/depth stylization and COMMIT conditions, and a 32x32 image dataset.
"""
from __future__ import annotations

import functools
import tempfile

import numpy as np
from data_standins import StandInAudioTokenizer, StandInTextEncoder, StandInVideoTokenizer

from vp_jax.data.synthetic import SyntheticConfig
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, Tokenizers, runner
from vp_jax.models.prefix_lm.config import SMALL_VOCAB

VIDEO_CFG = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=6, seed=3)
IMAGE_CFG = SyntheticConfig(resolution="32x32", num_frames=1, num_examples=8, seed=4)
TEXT_DIM = 32


class SmallVideoTokenizer(StandInVideoTokenizer):
  BITS = 10                                    # codes in [0, 2^10) = SMALL_VOCAB.visual_codes


class SmallAudioTokenizer(StandInAudioTokenizer):
  BITS = 8                                     # codes in [0, 256) = SMALL_VOCAB's per level

  def __init__(self, seed: int = 1):
    rng = np.random.default_rng(seed)
    self._proj = rng.normal(size=(self.LEVELS, self.HOP, self.BITS)).astype(np.float32)
    self._weights = (2 ** np.arange(self.BITS)).astype(np.int64)


def small_tokenizers() -> Tokenizers:
  return Tokenizers(video=SmallVideoTokenizer(), audio=SmallAudioTokenizer(),
                    text=StandInTextEncoder(dim=TEXT_DIM))


@functools.lru_cache(maxsize=None)
def tokenized() -> dict[str, str]:
  """{"vid": 17-frame video dir, "img": image dir}, tokenized once per process."""
  base = tempfile.mkdtemp(prefix="vp_tasks_")
  out = {}
  for name, cfg in (("vid", VIDEO_CFG), ("img", IMAGE_CFG)):
    out[name] = f"{base}/{name}"
    runner.tokenize_dataset(SyntheticSource(cfg), small_tokenizers(), out[name],
                            TokenizeConfig(shard_size=4, batch_size=2), progress=False)
  assert SMALL_VOCAB.visual_codes == 2 ** SmallVideoTokenizer.BITS
  return out
