"""The built-in demo's text encoder: a small T5 v1.1 with a SentencePiece model trained on captions.

No pretrained T5 can be downloaded here, so the demo builds its own, deterministically: a
SentencePiece BPE model (T5 ids: pad 0, eos 1, unk 2; byte fallback, so any text encodes)
trained on the built-in synthetic dataset's train-split captions (`training_captions()`, from
`SyntheticVideos.caption`, no rendering), and a 2-layer width-128 T5 v1.1 encoder with weights
randomly initialized (T5's own init scheme, fixed seed) and frozen. It is saved in HF layout
(config.json + model.safetensors + spiece.model), so the demo loads through the same conversion
code as a real google/t5-v1_1-xl directory. Why random-and-frozen rather than briefly trained:
see the text-conditioning section of README.md.

    python -m vp_jax.text.demo --out runs/demo_text   # builds (or reuses) it and encodes examples
"""
from __future__ import annotations

import argparse
import io
import os
from typing import Sequence

import numpy as np
import sentencepiece as spm

from vp_jax.data.synthetic import SceneConfig, SyntheticConfig, SyntheticVideos
from vp_jax.text import convert_hf
from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.encoder import TextEncoder
from vp_jax.text.model import init_params
from vp_jax.text.tokenizer import Tokenizer

DEMO_SPM_VOCAB = 640  # 256 byte pieces + 3 specials + merges that make every caption word one piece
DEMO_SEED = 0
# The captions the SentencePiece model is trained on: train-split video clips and still images of
# the built-in dataset, scenes of one or two objects (two-object captions join clauses with "and").
# Resolution and frame count do not change captions beyond video-vs-image.
DEMO_CAPTION_SOURCES = (
    SyntheticConfig(num_frames=17, num_examples=3000, scene=SceneConfig(max_objects=2)),
    SyntheticConfig(num_frames=1, num_examples=1000, scene=SceneConfig(max_objects=2)),
)


def training_captions(sources: Sequence[SyntheticConfig] = DEMO_CAPTION_SOURCES,
                      split: str = "train") -> list[str]:
  """Every caption of `split` of each synthetic dataset config, in order (scenes sampled, nothing
  rendered): the same list every call."""
  out = []
  for config in sources:
    videos = SyntheticVideos(config, split)
    out.extend(videos.caption(i) for i in range(len(videos)))
  return out


def train_sentencepiece(texts: Sequence[str], vocab_size: int = DEMO_SPM_VOCAB) -> bytes:
  """A SentencePiece model proto with T5's special ids, trained on `texts` (single thread: the
  same bytes for the same texts).

  BPE rather than T5's unigram: on a closed vocabulary of ~70 words, unigram pruning ends with
  sub-word fragments ("▁s ma ll") while BPE merges every caption word into one piece. The 256
  byte-fallback pieces keep any other text encodable.
  """
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
      model_type="bpe", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, byte_fallback=True,
      character_coverage=1.0, hard_vocab_limit=False, num_threads=1,
      max_sentencepiece_length=24,  # default 16 splits "▁counterclockwise" (17)
      minloglevel=2)
  return buf.getvalue()


def demo_config(spm_vocab_size: int) -> T5EncoderConfig:
  """The demo encoder: embedding rows rounded up to a multiple of 128 (like T5's 32128)."""
  return T5EncoderConfig(name="t5-demo", vocab_size=-(-spm_vocab_size // 128) * 128, d_model=128,
                         num_heads=4, head_dim=32, d_ff=256, num_layers=2)


def build_demo_encoder(directory: str | os.PathLike, **encoder_kwargs) -> TextEncoder:
  """Writes the demo encoder to `directory` (once; reused afterwards) and loads it."""
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  spm_path = os.path.join(directory, "spiece.model")
  if not os.path.exists(spm_path):
    Tokenizer(train_sentencepiece(training_captions())).save(spm_path)
  if not os.path.exists(os.path.join(directory, "model.safetensors")):
    cfg = demo_config(Tokenizer.load(spm_path).vocab_size)
    convert_hf.save(directory, cfg, init_params(cfg, DEMO_SEED))
  return TextEncoder.load(directory, **encoder_kwargs)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/demo_text", help="directory of the demo encoder")
  parser.add_argument("texts", nargs="*", default=["a small red circle moves left over a "
                                                   "checkered navy background"])
  args = parser.parse_args(argv)
  enc = build_demo_encoder(args.out)
  result = enc.encode(args.texts)
  print(f"model_id {enc.model_id}  embed_dim {enc.embed_dim}  max_length {enc.max_length}")
  for text, emb, mask, cut in zip(args.texts, result.embeddings, result.mask,
                                  result.num_truncated):
    n = int(mask.sum())
    pieces = enc.vocabulary.pieces(text)
    print(f"{text[:60]!r}: {len(pieces)} pieces -> {n} tokens (EOS included), {int(cut)} "
          f"truncated; embeddings [{n}, {emb.shape[-1]}], first row {np.round(emb[0, :4], 3)}")


if __name__ == "__main__":
  main()
