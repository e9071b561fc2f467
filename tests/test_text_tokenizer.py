"""SentencePiece tokenization: T5 ids, 64-token truncation reported, padding mask, demo vocab."""
import io

import numpy as np
import pytest
import sentencepiece as spm

from vp_jax.data.synthetic import SceneConfig, SyntheticConfig
from vp_jax.data.synthetic import scene as scene_lib
from vp_jax.text.demo import DEMO_CAPTION_SOURCES, train_sentencepiece, training_captions
from vp_jax.text.tokenizer import EOS_ID, PAD_ID, Tokenizer

BYTE_PIECES = range(3, 3 + 256)  # after pad 0, eos 1, unk 2: the byte-fallback pieces


@pytest.fixture(scope="module")
def captions():
  return training_captions()


@pytest.fixture(scope="module")
def proto(captions):
  return train_sentencepiece(captions)


def _held_out() -> list[str]:
  """Captions the SentencePiece model never saw: the validation and test splits, one- and
  two-object scenes, videos and images, another seed."""
  other = (SyntheticConfig(num_examples=400, seed=9), SyntheticConfig(num_frames=1,
                                                                      num_examples=400, seed=9),
           SyntheticConfig(num_examples=400, seed=9, scene=SceneConfig(max_objects=2)))
  return (training_captions(DEMO_CAPTION_SOURCES, "validation")
          + training_captions(other, "test"))


def test_demo_vocabulary_is_trained_on_the_datasets_captions(captions, proto):
  assert train_sentencepiece(training_captions()) == proto  # same bytes every build
  assert len(captions) == 4000 and len(set(captions)) > 3000
  tok = Tokenizer(proto)
  assert tok.vocab_size == 640
  # Every label value the dataset can name occurs in the training captions.
  words = {w for c in captions for w in c.replace(",", " ").split()}
  labels = (set(scene_lib.SHAPES) | set(scene_lib.COLOURS) | set(scene_lib.SIZES)
            | set(scene_lib.DIRECTIONS) | {"clockwise", "counterclockwise"}
            | {w for b in scene_lib.BACKGROUNDS for w in b.split()})
  assert labels <= words, labels - words
  # Held-out dataset captions: one piece per word (a comma is its own piece), never a byte
  # fallback or <unk> piece.
  held_out = _held_out()
  unseen = [c for c in held_out if c not in set(captions)]
  assert len(held_out) == 650 and len(unseen) > 400
  for caption in unseen:
    pieces = tok.pieces(caption)
    assert len(pieces) == len(caption.split()) + caption.count(","), caption
    assert not any(p in BYTE_PIECES or p == 2 for p in pieces), caption
  caption = "a small red circle moves left over a checkered navy background"
  assert len(tok.pieces(caption)) == 11
  # Text outside the grammar still encodes (byte fallback), and decodes back.
  odd = "Zebra ünïcode 🙂!"
  assert 2 not in tok.pieces(odd)  # no <unk>
  assert any(p in BYTE_PIECES for p in tok.pieces(odd))
  assert tok.decode(tok.encode([odd]).ids[0]) == odd


def test_padding_mask_and_eos(proto):
  tok = Tokenizer(proto)
  texts = ["a red cross drifts up", "", "a large blue square rushes down over a dark green "
           "background"]
  out = tok.encode(texts)
  assert out.ids.shape == (3, 64) and out.ids.dtype == np.int32 and out.mask.dtype == bool
  lengths = [len(tok.pieces(t)) + 1 for t in texts]
  np.testing.assert_array_equal(out.mask.sum(axis=1), lengths)
  for row, n in enumerate(lengths):
    assert out.ids[row, n - 1] == EOS_ID
    assert out.mask[row, :n].all() and not out.mask[row, n:].any()
    assert (out.ids[row, n:] == PAD_ID).all()
    np.testing.assert_array_equal(out.ids[row, :n - 1], tok.pieces(texts[row]))
  np.testing.assert_array_equal(out.num_truncated, 0)
  assert tok.decode(out.ids[2]) == texts[2]


def test_truncation_at_64_tokens_is_reported(proto):
  tok = Tokenizer(proto)
  words = ("a red circle and a blue square moves left over a navy background " * 10).split()
  exact = " ".join(words[:63])   # 63 pieces + EOS = 64: fits
  over1 = " ".join(words[:64])   # one piece too many
  long = " ".join(words)         # 130 pieces
  out = tok.encode([exact, over1, long])
  np.testing.assert_array_equal(out.num_truncated, [0, 1, len(words) - 63])
  assert out.mask.all()
  assert (out.ids[:, 63] == EOS_ID).all()
  # The kept pieces are the first 63, for every row.
  for row in range(3):
    np.testing.assert_array_equal(out.ids[row, :63], tok.pieces(long)[:63])
  short = Tokenizer(proto, max_length=8).encode([long])
  assert short.num_truncated[0] == len(words) - 7 and short.ids[0, 7] == EOS_ID


def test_bad_inputs_raise_clear_errors(proto, captions, tmp_path):
  tok = Tokenizer(proto)
  with pytest.raises(TypeError, match="single str"):
    tok.encode("a red circle")
  with pytest.raises(TypeError, match="must be str, got int"):
    tok.encode(["ok", 3])
  with pytest.raises(ValueError, match="not a SentencePiece model"):
    Tokenizer(b"not a model", source="junk.model")
  with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
    Tokenizer.load(tmp_path)
  # A SentencePiece model with the library's default ids (unk 0, bos 1, eos 2) is not T5's.
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(captions[:200]), model_writer=buf,
                                 vocab_size=60, model_type="bpe", minloglevel=2, num_threads=1)
  with pytest.raises(ValueError, match="T5 expects pad=0, eos=1"):
    Tokenizer(buf.getvalue(), source="default_ids.model")
  tok.save(tmp_path / "spiece.model")
  assert Tokenizer.load(tmp_path).fingerprint == tok.fingerprint
