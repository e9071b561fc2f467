"""TextEncoder (batched, sharded over 8 simulated devices), EmbeddingCache, the demo encoder, and
embed_captions (its statistics and chunking, on a stand-in encoder) and CLI filling a cache."""
import dataclasses
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos
from vp_jax.data.synthetic import scene as scene_lib
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.text import convert_hf
from vp_jax.text.cache import EmbeddingCache
from vp_jax.text.demo import build_demo_encoder, demo_config
from vp_jax.text.embed import EmbedStats, embed_captions
from vp_jax.text.encoder import TextEmbeddings, TextEncoder
from vp_jax.text.tokenizer import Tokenizer

TEXTS = ["a small red circle moves left over a navy background",
         "a small blue circle moves left over a navy background",
         "a green cross on a gray background", "",
         "a small red circle moves left and a large blue square moves right over a checkered "
         "navy background"]


def dataset_captions(n: int, seed: int = 1) -> list[str]:
  """Captions of n one-object synthetic clips: "a <size> <colour> <shape> <motion> ..."."""
  videos = SyntheticVideos(SyntheticConfig(num_examples=n, seed=seed))
  return [videos.caption(i) for i in range(n)]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("demo_text")
  build_demo_encoder(directory)
  return directory


@pytest.fixture(scope="module")
def demo(demo_dir):
  return TextEncoder.load(demo_dir, batch_size=8)


def test_demo_encoder_embeddings(demo, demo_dir, tmp_path):
  assert demo.config.name == "t5-demo" and demo.embed_dim == 128 and demo.max_length == 64
  out = demo.encode(TEXTS)
  assert isinstance(out, TextEmbeddings)
  assert out.embeddings.shape == (5, 64, 128) and out.embeddings.dtype == np.float32
  assert out.mask.dtype == bool and out.num_truncated.dtype == np.int32
  np.testing.assert_array_equal(out.mask.sum(1), [11, 11, 8, 1, 19])
  assert not out.embeddings[~out.mask].any()              # padded positions are exactly 0
  assert np.all(np.linalg.norm(out.embeddings[out.mask], axis=-1) > 1.0)
  # Captions differing in one word differ at that word (position 2) and, through attention,
  # elsewhere; identical captions give identical embeddings.
  diff = np.linalg.norm(out.embeddings[0] - out.embeddings[1], axis=-1)
  assert diff[2] > 5.0 and diff[0] > 0.1 and diff[11:].max() == 0
  again = demo.encode(TEXTS[:1])
  np.testing.assert_array_equal(again.embeddings[0], out.embeddings[0])
  # Rebuilding reuses the files: the same model id.
  mtime = os.path.getmtime(demo_dir / "model.safetensors")
  assert build_demo_encoder(demo_dir, batch_size=8).model_id == demo.model_id
  assert os.path.getmtime(demo_dir / "model.safetensors") == mtime
  # A fresh build elsewhere is the same encoder (deterministic SentencePiece and weights).
  assert build_demo_encoder(tmp_path / "again").model_id == demo.model_id
  # Its config: embedding rows are the SentencePiece vocabulary rounded up to a multiple of 128.
  assert demo.config == demo_config(Tokenizer.load(str(demo_dir / "spiece.model")).vocab_size)


@pytest.mark.parametrize("spm_vocab, rows", [(1, 128), (127, 128), (128, 128), (129, 256),
                                             (1000, 1024), (32100, 32128)])
def test_demo_config_rounds_the_vocabulary_up_to_128(spm_vocab, rows):
  cfg = demo_config(spm_vocab)
  assert cfg.vocab_size == rows and cfg.vocab_size >= spm_vocab
  assert (cfg.name, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.num_layers) == ("t5-demo", 128, 4,
                                                                                 32, 2)


def test_sharded_batches_match_single_device(demo_dir):
  cfg, params = convert_hf.load(demo_dir)
  tok = Tokenizer.load(demo_dir)
  texts = dataset_captions(11) + ["a " * 100]  # 12 texts, one truncated
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  sharded = TextEncoder(cfg, params, tok, mesh=mesh, batch_size=5)
  assert sharded.batch_size == 8                          # rounded up to the 4 data-parallel ways
  assert sharded._params["layers"]["wi_0"].sharding.spec == P(None, "fsdp", "tensor")
  assert sharded._params["token_embed"].sharding.spec == P("tensor", "fsdp")
  single = TextEncoder(cfg, params, tok, batch_size=3,
                       mesh=make_mesh(MeshConfig(), devices=jax.devices()[:1]))
  a, b = sharded.encode(texts), single.encode(texts)       # 2 sharded chunks vs 4 chunks
  np.testing.assert_allclose(a.embeddings, b.embeddings, atol=2e-5, rtol=0)
  np.testing.assert_array_equal(a.mask, b.mask)
  np.testing.assert_array_equal(a.num_truncated, [0] * 11 + [100 - 63])
  assert sharded.model_id == single.model_id               # same weights, same id


def test_load_errors_and_model_id(demo_dir, tmp_path):
  cfg, params = convert_hf.load(demo_dir)
  tok = Tokenizer.load(demo_dir)
  with pytest.raises(ValueError, match="640 pieces but the encoder's embedding has only 128"):
    TextEncoder(dataclasses.replace(cfg, vocab_size=128),
                dict(params, token_embed=params["token_embed"][:128]), tok)
  bad = dict(params)
  del bad["rel_bias"]
  with pytest.raises(ValueError, match=r"missing \['rel_bias'\]"):
    TextEncoder(cfg, bad, tok)
  convert_hf.save(tmp_path / "nospm", cfg, params)
  with pytest.raises(FileNotFoundError, match="no spiece.model"):
    TextEncoder.load(tmp_path / "nospm")
  with pytest.raises(FileNotFoundError, match="neither a HF checkpoint"):
    TextEncoder.load(tmp_path)
  bf16 = TextEncoder.load(demo_dir, dtype="bfloat16")
  assert bf16.config.dtype == "bfloat16"
  assert bf16.model_id != TextEncoder(cfg, params, tok).model_id


class _Counting:
  def __init__(self, enc):
    self.enc, self.model_id, self.calls = enc, enc.model_id, []

  def encode(self, texts):
    self.calls.append(list(texts))
    return self.enc.encode(texts)


def test_cache_hits_are_bit_identical(demo, tmp_path):
  cache = EmbeddingCache(tmp_path, demo.model_id)
  counting = _Counting(demo)
  first = cache.get_or_compute(TEXTS + [TEXTS[0]], counting)
  assert counting.calls == [TEXTS]                          # duplicates encoded once
  fresh = demo.encode(TEXTS + [TEXTS[0]])
  np.testing.assert_array_equal(first.embeddings, fresh.embeddings)
  reopened = EmbeddingCache(tmp_path, demo.model_id)
  mixed = ["a medium cyan triangle drifts up over a gray background", TEXTS[2], TEXTS[0]]
  second = reopened.get_or_compute(mixed, counting)
  assert counting.calls[1] == mixed[:1]                     # only the new text is computed
  assert (reopened.hits, reopened.misses) == (2, 1)
  for got, want in ((second.embeddings[1], first.embeddings[2]),
                    (second.embeddings[2], first.embeddings[0])):
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
  np.testing.assert_array_equal(second.mask[1:], first.mask[[2, 0]])
  files = [f for _, _, fs in os.walk(cache.directory) for f in fs]
  assert len(files) == 6 and not [f for f in files if f.startswith(".tmp")]


def test_cache_recovers_from_corrupt_entries_and_checks_the_model(demo, tmp_path):
  cache = EmbeddingCache(tmp_path, demo.model_id)
  first = cache.get_or_compute(TEXTS[:2], demo)
  path = cache._path(TEXTS[0])
  with open(path, "wb") as f:
    f.write(b"torn")
  assert cache.get(TEXTS[0]) is None
  again = cache.get_or_compute(TEXTS[:2], demo)
  assert again.embeddings.tobytes() == first.embeddings.tobytes()
  assert cache.get(TEXTS[0]) is not None                    # rewritten
  long = " ".join(["red circle"] * 40)
  truncated = cache.get_or_compute([long], demo)
  assert truncated.num_truncated[0] == 80 - 63
  assert EmbeddingCache(tmp_path, demo.model_id).get_or_compute([long], demo).num_truncated[0] == 17
  other = EmbeddingCache(tmp_path, "another-model")
  with pytest.raises(ValueError, match="cache is for model 'another-model'"):
    other.get_or_compute(TEXTS[:1], demo)
  with pytest.raises(ValueError, match="texts is empty"):
    cache.get_or_compute([], demo)


def test_demo_embeddings_carry_the_caption_words_linearly(demo):
  """What the LM's linear text projection needs from the frozen random demo encoder: the words."""
  captions = dataset_captions(400)   # "a <size> <colour> <shape> ..." (not the SPM's training set)
  COLOURS, SHAPES = list(scene_lib.COLOURS), list(scene_lib.SHAPES)
  out = demo.encode(captions)

  def probe_accuracy(features, labels, vocab):
    y = np.array([vocab.index(w) for w in labels])
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    w = np.linalg.solve(x[:300].T @ x[:300] + 1e-2 * np.eye(x.shape[1]),
                        x[:300].T @ np.eye(len(vocab))[y[:300]])
    return float(((x[300:] @ w).argmax(1) == y[300:]).mean())

  colours = [c.split()[2] for c in captions]
  shapes = [c.split()[3] for c in captions]
  assert probe_accuracy(out.embeddings[:, 2], colours, list(COLOURS)) == 1.0
  assert probe_accuracy(out.embeddings[:, 3], shapes, list(SHAPES)) == 1.0
  # The same probe on shuffled labels is near chance: the accuracy above is not an artifact.
  shuffled = list(np.random.default_rng(0).permutation(colours))
  assert probe_accuracy(out.embeddings[:, 2], shuffled, list(COLOURS)) < 0.3


def test_embed_cli_fills_the_cache(demo_dir, tmp_path):
  from vp_jax.text import embed
  captions = TEXTS + [TEXTS[0], " ".join(["red circle"] * 40)]
  (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n")
  argv = ["--demo", str(demo_dir), "--captions", str(tmp_path / "captions.txt"), "--cache",
          str(tmp_path / "cache"), "--batch_size", "8", "--chunk_size", "3"]
  first = embed.main(argv)
  # Chunks of 3: [0 1 2] [3 4 0] [long]; TEXTS[0] repeats in the second chunk (a cache hit).
  assert first == embed.EmbedStats(captions=7, computed=6, cached=1, truncated=1)
  second = embed.main(argv)
  assert second == embed.EmbedStats(captions=7, computed=0, cached=7, truncated=1)
  enc = build_demo_encoder(demo_dir, batch_size=8)
  got = EmbeddingCache(tmp_path / "cache", enc.model_id).get_or_compute(captions, enc)
  np.testing.assert_allclose(got.embeddings, enc.encode(captions).embeddings, atol=1e-6, rtol=0)


class _WordEncoder:
  """A fast stand-in for TextEncoder: word j of a text -> [len(word), j + 1] (4 positions, the
  words past 4 counted as truncated); records each encode call's texts."""
  model_id = "word-encoder"

  def __init__(self):
    self.calls = []

  def encode(self, texts):
    self.calls.append(list(texts))
    emb, mask = np.zeros((len(texts), 4, 2), np.float32), np.zeros((len(texts), 4), bool)
    for i, text in enumerate(texts):
      for j, word in enumerate(text.split()[:4]):
        emb[i, j], mask[i, j] = (len(word), j + 1), True
    trunc = np.array([max(0, len(t.split()) - 4) for t in texts], np.int32)
    return TextEmbeddings(embeddings=emb, mask=mask, num_truncated=trunc)


def test_embed_captions_counts_duplicates_within_and_across_calls(tmp_path):
  enc = _WordEncoder()
  cache = EmbeddingCache(tmp_path, enc.model_id)
  first = ["red circle", "blue square", "red circle", "a b c d e f"]
  # One chunk: the repeat of a caption new to the cache is neither encoded again nor a cache hit.
  assert embed_captions(first, enc, cache) == EmbedStats(captions=4, computed=3, cached=0,
                                                         truncated=1)
  assert enc.calls == [["red circle", "blue square", "a b c d e f"]]
  again = iter(["blue square", "green cross", "blue square", "a b c d e f"])   # any iterable
  assert embed_captions(again, enc, cache) == EmbedStats(captions=4, computed=1, cached=3,
                                                         truncated=1)
  assert enc.calls[1:] == [["green cross"]]
  # Chunks of one: the repeat comes after the first is stored, so it is a hit.
  assert embed_captions(["pink star", "pink star"], enc, cache, chunk_size=1) == EmbedStats(
      captions=2, computed=1, cached=1, truncated=0)
  assert enc.calls[2:] == [["pink star"]]
  assert embed_captions([], enc, cache) == EmbedStats(0, 0, 0, 0) and len(enc.calls) == 3
  rows, mask, truncated = cache.get("a b c d e f")
  np.testing.assert_array_equal(rows, [[1, 1], [1, 2], [1, 3], [1, 4]])
  assert mask.all() and truncated == 2
  rows, mask, _ = cache.get("green cross")
  np.testing.assert_array_equal(rows, [[5, 1], [5, 2], [0, 0], [0, 0]])
  np.testing.assert_array_equal(mask, [True, True, False, False])


def test_embed_captions_chunk_sizes_fill_the_cache_alike(tmp_path):
  captions = ["red circle", "blue square", "red circle", "a tiny green cross", "blue square"]
  distinct = list(dict.fromkeys(captions))
  stored, calls = {}, {}
  for size in (1, 2, 1024):
    enc = _WordEncoder()
    cache = EmbeddingCache(tmp_path / str(size), enc.model_id)
    stats = embed_captions(captions, enc, cache, chunk_size=size)
    # Chunks of 2, [red blue] [red cross] [blue], and of 1 find both repeats stored; one chunk none.
    assert stats == EmbedStats(captions=5, computed=3, cached=0 if size == 1024 else 2,
                               truncated=0)
    calls[size] = enc.calls
    stored[size] = [cache.get(t) for t in distinct]
  assert calls == {1: [["red circle"], ["blue square"], ["a tiny green cross"]],
                   2: [["red circle", "blue square"], ["a tiny green cross"]],
                   1024: [distinct]}
  for size in (2, 1024):
    for got, want in zip(stored[size], stored[1]):
      assert got[0].tobytes() == want[0].tobytes() and got[2] == want[2]
      np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_array_equal(stored[1][2][0], [[1, 1], [4, 2], [5, 3], [5, 4]])


@pytest.mark.parametrize("size", [0, -3])
def test_embed_captions_rejects_non_positive_chunk_size(tmp_path, size):
  enc = _WordEncoder()
  cache = EmbeddingCache(tmp_path, enc.model_id)
  with pytest.raises(ValueError, match=f"chunk_size must be positive, got {size}"):
    embed_captions(["red circle"], enc, cache, chunk_size=size)
  assert enc.calls == [] and cache.get("red circle") is None
