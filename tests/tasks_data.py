"""Small tokenized datasets for the seqio task tests, made once per test process.

The tokenization job (vp_jax.data.tokenize) runs on the synthetic set with the real tokenizers of
tests/real_tokenizers.py (untrained MAGVIT-v2 `tiny` with 2^10 codes and SoundStream with 4 x 256
codes, i.e. the CPU LM vocabulary SMALL_VOCAB, and the demo T5 encoder, 128 wide): a 17-frame 32x32
video dataset with audio, flow/depth stylization and COMMIT conditions, and a 32x32 image dataset.
"""
from __future__ import annotations

import functools
import tempfile

from real_tokenizers import BATCH, TEXT_DIM, tokenizers  # noqa: F401  (TEXT_DIM: for the LM tests)

from vp_jax.data.synthetic import SyntheticConfig
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, runner

VIDEO_CFG = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=6, seed=3)
IMAGE_CFG = SyntheticConfig(resolution="32x32", num_frames=1, num_examples=8, seed=4)


@functools.lru_cache(maxsize=None)
def tokenized() -> dict[str, str]:
  """{"vid": 17-frame video dir, "img": image dir}, tokenized once per process."""
  base = tempfile.mkdtemp(prefix="vp_tasks_")
  out = {}
  for name, cfg in (("vid", VIDEO_CFG), ("img", IMAGE_CFG)):
    out[name] = f"{base}/{name}"
    runner.tokenize_dataset(SyntheticSource(cfg), tokenizers(), out[name],
                            TokenizeConfig(shard_size=4, batch_size=BATCH), progress=False)
  return out
