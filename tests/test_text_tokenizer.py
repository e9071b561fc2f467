"""SentencePiece tokenization: T5 ids, 64-token truncation reported, padding mask, demo vocab."""
import io

import numpy as np
import pytest
import sentencepiece as spm

from vp_jax.text.captions import COLOURS, MOTIONS, SHAPES, demo_captions
from vp_jax.text.demo import train_sentencepiece
from vp_jax.text.tokenizer import EOS_ID, PAD_ID, Tokenizer


@pytest.fixture(scope="module")
def proto():
  return train_sentencepiece(demo_captions())


def test_demo_vocabulary_is_deterministic_and_word_level(proto):
  assert train_sentencepiece(demo_captions()) == proto  # same bytes every build
  tok = Tokenizer(proto)
  assert tok.vocab_size == 640
  caption = "a small red circle moves left over a blue background"
  assert len(tok.pieces(caption)) == len(caption.split())  # one piece per caption word
  captions = demo_captions()
  assert len(set(captions)) == len(captions) == 5000
  words = {w for c in captions for w in c.split()}
  assert set(COLOURS) | set(SHAPES) | {w for m in MOTIONS for w in m.split()} <= words
  pieces = sum(len(tok.pieces(c)) for c in captions[:500])
  assert pieces == sum(len(c.split()) for c in captions[:500])
  # Text outside the grammar still encodes (byte fallback), and decodes back.
  odd = "Zebra ünïcode 🙂!"
  assert 2 not in tok.pieces(odd)  # no <unk>
  assert tok.decode(tok.encode([odd]).ids[0]) == odd


def test_padding_mask_and_eos(proto):
  tok = Tokenizer(proto)
  texts = ["a red ring spins", "", "a big blue star falls over a dark background"]
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
  words = ("a red circle and a blue square move left over a dark background " * 10).split()
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


def test_bad_inputs_raise_clear_errors(proto, tmp_path):
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
  spm.SentencePieceTrainer.train(sentence_iterator=iter(demo_captions()[:200]), model_writer=buf,
                                 vocab_size=60, model_type="bpe", minloglevel=2, num_threads=1)
  with pytest.raises(ValueError, match="T5 expects pad=0, eos=1"):
    Tokenizer(buf.getvalue(), source="default_ids.model")
  tok.save(tmp_path / "spiece.model")
  assert Tokenizer.load(tmp_path).fingerprint == tok.fingerprint
