"""Fakes and small builders shared by the tokenization job's unit tests (test_tokenize_shards.py,
test_tokenize_features.py) and its pipeline tests (test_data_tokenize.py): a list-backed source,
numpy text/audio encoder doubles, a real in-memory MAGVIT-v2 `tiny` fixture, synthetic examples."""
import numpy as np
import pytest

from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos
from vp_jax.data.tokenize import features, shards
from vp_jax.data.tokenize.features import TokenizeConfig

FRAME_SHARD = "train.tfrecord-{:05d}-of-{:05d}"

class ListSource:
  """A source over a list of examples; `describe()` is what the fingerprint sees."""

  def __init__(self, examples, split="train", has_structure=False, **describe):
    self.examples, self.split, self.has_structure = list(examples), split, has_structure
    self.extra = describe

  def __len__(self):
    return len(self.examples)

  def read(self, start, stop):
    yield from self.examples[start:stop]

  def describe(self):
    return {"type": "list", "split": self.split, "n": len(self.examples), **self.extra}


class ShortSource(ListSource):
  """Gives one example fewer than asked for (a truncated / changed underlying dataset)."""

  def read(self, start, stop):
    yield from self.examples[start:stop - 1]


class FakeText:
  """Text encoder double: embeddings[b, l, d] = 100 * len(text_b) + l + d / 10 on the first
  len(words) positions, zero elsewhere; num_truncated[b] = len(words) % 3."""
  model_id = "fake-text/1"

  def __init__(self):
    self.calls = []

  def encode(self, texts):
    from vp_jax.text.encoder import TextEmbeddings
    self.calls.append(list(texts))
    b, length, dim = len(texts), features.TEXT_LEN, 4
    emb = np.zeros((b, length, dim), np.float32)
    mask = np.zeros((b, length), bool)
    for i, t in enumerate(texts):
      n = len(t.split())
      mask[i, :n] = True
      emb[i, :n] = (100 * len(t) + np.arange(n)[:, None] + np.arange(dim)[None] / 10)
    trunc = np.array([len(t.split()) % 3 for t in texts], np.int32)
    return TextEmbeddings(emb, mask, trunc)


class FakeAudio:
  """Audio tokenizer double: codes[b, level, t] = round(1000 * wave_b[0]) + 10 * level + t."""

  def __init__(self):
    self.shapes = []

  def encode(self, waves):
    waves = np.asarray(waves)
    self.shapes.append(waves.shape)
    base = np.round(1000 * waves[:, 0]).astype(np.int64)
    return base[:, None, None] + 10 * np.arange(4)[None, :, None] + np.arange(3)[None, None, :]


class Described:
  def __init__(self, record):
    self.record = record

  def describe(self):
    return self.record


class Plain:
  checkpoint = "/ckpt/run"
  step = 7
  model_id = "m-1"


@pytest.fixture(scope="module")
def video_tok():
  """A real MAGVIT-v2 `tiny` tokenizer (random init, in memory) on one device."""
  import jax
  from vp_jax.models.magvit import preset
  from vp_jax.parallel.mesh import MeshConfig, make_mesh
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer, create_tokenizer
  tok = VideoTokenizer.from_module(create_tokenizer(preset("tiny", embedding_dim=10)),
                                   make_mesh(MeshConfig(), devices=jax.devices()[:1]))
  assert tok.latent_shape(5, 16, 16) == (2, 2, 2)
  return tok


def synthetic_images(n, hw=(16, 16), seed=3):
  """n synthetic still images (with labels, no audio) at hw."""
  videos = SyntheticVideos(SyntheticConfig(resolution=hw, num_frames=1, num_examples=n, seed=seed))
  return [videos[i] for i in range(n)]


def synthetic_clips(n, seed=5):
  """n synthetic 5-frame 16x16 clips (with audio, labels, flow and depth)."""
  videos = SyntheticVideos(SyntheticConfig(resolution=(16, 16), num_frames=5, num_examples=n,
                                           seed=seed))
  return [videos[i] for i in range(n)]


def small_plan(tmp_path, n=9, shard_size=4, **kw):
  src = ListSource([{"id": str(i)} for i in range(n)], **kw)
  return shards.make_plan(str(tmp_path), src, TokenizeConfig(shard_size=shard_size),
                          {"video": {"class": "V"}}, stylization=False)


def write_text(path, text=""):
  with open(path, "w") as f:
    f.write(text)
