"""The real tokenizers for the data and task tests, made once per test process.

MAGVIT-v2 (`vp_jax.tokenizers.VideoTokenizer`), SoundStream (`AudioTokenizer`) and the demo T5
encoder (`vp_jax.text.demo.build_demo_encoder`), untrained: random init written to workdirs through
the path a training run uses (`vp_jax.tokenizers.untrained`: config file + a Trainer checkpoint) and
loaded back through their public `load` APIs, so the tokenization job sees exactly what it sees in
production (shapes, code ranges, dtypes, checkpoint records), just not meaningful codes.

Sizes are the CPU LM vocabulary's (`vp_jax.models.prefix_lm.config.SMALL_VOCAB`): MAGVIT `tiny` with a 10-bit LFQ
(2^10 codes), SoundStream `small` with 4 x 256 codes; text embeddings are the demo encoder's 128
wide. Everything runs on one device with the job's batch size 2 (each new input shape is one XLA
compile, the main cost of these tests).
"""
from __future__ import annotations

import functools
import tempfile

import jax
import numpy as np

from vp_jax.data.tokenize import Tokenizers
from vp_jax.models.magvit import preset as magvit_preset
from vp_jax.models.soundstream.config import preset as soundstream_preset
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.models.prefix_lm.config import SMALL_VOCAB as SMALL
from vp_jax.text.demo import build_demo_encoder
from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
from vp_jax.tokenizers.untrained import (write_untrained_audio_tokenizer,
                                         write_untrained_video_tokenizer)
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer

MAGVIT = magvit_preset("tiny", embedding_dim=10)            # codes in [0, 2^10)
# `small` narrowed like tests/test_soundstream_api.py's TINY_OVERRIDES (build + load ~3x faster).
SOUNDSTREAM = soundstream_preset(
    "small", codebook_size=256, channels=4, embed_dim=16, stft_disc_ffts=(256,),
    stft_disc_channels=4, stft_disc_layers=2, wave_disc_scales=1, wave_disc_channels=4,
    wave_disc_layers=2, mel_windows=(256, 1024), kmeans_iters=2)  # 4 levels x [0, 256)
TEXT_DIM = 128                                              # the demo T5 encoder's width
BATCH = 2                                                   # the tests' TokenizeConfig.batch_size
assert SMALL.visual_codes == 2 ** MAGVIT.embedding_dim
assert SMALL.audio_codes_per_level == SOUNDSTREAM.codebook_size


@functools.lru_cache(maxsize=None)
def workdirs() -> dict[str, str]:
  """{"video", "audio", "text"}: the three checkpoint directories (a temp dir per process)."""
  base = tempfile.mkdtemp(prefix="vp_real_tokenizers_")
  dirs = {"video": f"{base}/magvit_tiny", "audio": f"{base}/soundstream_small",
          "text": f"{base}/t5_demo"}
  write_untrained_video_tokenizer(dirs["video"], MAGVIT, seed=0)
  write_untrained_audio_tokenizer(dirs["audio"], SOUNDSTREAM, seed=0)
  build_demo_encoder(dirs["text"])
  return dirs


def _one_device():
  return make_mesh(MeshConfig(), devices=jax.devices()[:1])


def load_tokenizers(dirs: dict[str, str] | None = None) -> Tokenizers:
  """Fresh instances loaded from `dirs` (default `workdirs()`), as a Beam worker or another
  process would."""
  dirs = dirs or workdirs()
  from vp_jax.text import TextEncoder
  return Tokenizers(video=VideoTokenizer.load(dirs["video"], mesh=_one_device()),
                    audio=AudioTokenizer.load(dirs["audio"]),
                    text=TextEncoder.load(dirs["text"], mesh=_one_device(), batch_size=BATCH))


@functools.lru_cache(maxsize=None)
def tokenizers() -> Tokenizers:
  """The shared instances (their jit caches too: each input shape compiles once per process)."""
  return load_tokenizers()


def with_video(video, base: Tokenizers | None = None) -> Tokenizers:
  base = base or tokenizers()
  return Tokenizers(video=video, audio=base.audio, text=base.text, text_cache=base.text_cache)


class CallCountingVideoTokenizer:
  """Test double for the job's control flow only: forwards every call to a real VideoTokenizer,
  counts the job's calls (`encode`, `commit_condition`) and, when `kill_at_call` is set, raises
  KeyboardInterrupt at that call (a job killed mid-shard). Its `describe()` is the real one, so a
  restart with the undisturbed tokenizer is the same job."""

  def __init__(self, tokenizer: VideoTokenizer, kill_at_call: int | None = None):
    self.tokenizer, self.kill_at_call, self.calls = tokenizer, kill_at_call, 0

  def _count(self):
    self.calls += 1
    if self.kill_at_call is not None and self.calls >= self.kill_at_call:
      raise KeyboardInterrupt(f"simulated kill at video tokenizer call {self.calls}")

  def describe(self):
    return self.tokenizer.describe()

  def latent_shape(self, t, h, w):
    return self.tokenizer.latent_shape(t, h, w)

  def encode(self, frames):
    self._count()
    return self.tokenizer.encode(frames)

  def commit_condition(self, frames, visible):
    self._count()
    return self.tokenizer.commit_condition(frames, visible)


def fill(batch: np.ndarray, size: int = BATCH) -> np.ndarray:
  """The job's batch filling (repeat the last row): direct encodes use the job's exact shapes."""
  from vp_jax.data.tokenize.features import _fill
  return _fill(np.asarray(batch), size)
