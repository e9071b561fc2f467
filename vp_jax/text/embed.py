"""Precompute caption embeddings into an EmbeddingCache: `python -m vp_jax.text.embed`.

For an offline job over a captions file (one caption per line) or prompts before generation: loads
the encoder (HF or T5X checkpoint, or the demo encoder), encodes the captions not yet cached in
chunks, and prints how many were computed, found and truncated at 64 tokens.

    python -m vp_jax.text.embed --checkpoint /data/t5-v1_1-xl --captions captions.txt \\
        --cache /data/text_cache
    python -m vp_jax.text.embed --demo runs/demo_text --captions captions.txt --cache runs/cache
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Iterable, Sequence

import numpy as np

from vp_jax.text.cache import EmbeddingCache
from vp_jax.text.encoder import TextEncoder


@dataclasses.dataclass(frozen=True)
class EmbedStats:
  captions: int      # lines processed (duplicates included)
  computed: int      # distinct captions encoded now
  cached: int        # captions found in the cache
  truncated: int     # captions longer than 64 tokens (cut; see num_truncated)


def embed_captions(captions: Iterable[str], encoder: TextEncoder, cache: EmbeddingCache, *,
                   chunk_size: int = 1024) -> EmbedStats:
  """Makes sure every caption's embedding is in `cache` (encoding misses `chunk_size` at a time)."""
  if chunk_size <= 0:
    raise ValueError(f"embed_captions: chunk_size must be positive, got {chunk_size}.")
  total = truncated = 0
  hits0, misses0 = cache.hits, cache.misses
  chunk: list[str] = []

  def flush():
    nonlocal truncated
    if chunk:
      truncated += int(np.count_nonzero(cache.get_or_compute(chunk, encoder).num_truncated))
      chunk.clear()

  for caption in captions:
    chunk.append(caption)
    total += 1
    if len(chunk) == chunk_size:
      flush()
  flush()
  return EmbedStats(captions=total, computed=cache.misses - misses0, cached=cache.hits - hits0,
                    truncated=truncated)


def main(argv: Sequence[str] | None = None) -> EmbedStats:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="HF directory or T5X checkpoint")
  source.add_argument("--demo", help="directory of the demo encoder (built if missing)")
  parser.add_argument("--config", default=None, help="preset name (required for T5X)")
  parser.add_argument("--tokenizer", default=None, help="spiece.model (default: next to HF)")
  parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
  parser.add_argument("--captions", required=True, help="text file, one caption per line")
  parser.add_argument("--cache", required=True, help="EmbeddingCache directory")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--chunk_size", type=int, default=1024)
  args = parser.parse_args(argv)
  if args.demo:
    from vp_jax.text.demo import build_demo_encoder  # pylint: disable=import-outside-toplevel
    encoder = build_demo_encoder(args.demo, batch_size=args.batch_size, dtype=args.dtype)
  else:
    encoder = TextEncoder.load(args.checkpoint, config=args.config, tokenizer=args.tokenizer,
                               batch_size=args.batch_size, dtype=args.dtype)
  cache = EmbeddingCache(args.cache, encoder.model_id)
  with open(args.captions, encoding="utf-8") as f:
    stats = embed_captions((line.rstrip("\n") for line in f), encoder, cache,
                           chunk_size=args.chunk_size)
  print(f"model {encoder.model_id}: {stats.captions} captions, {stats.computed} encoded, "
        f"{stats.cached} already cached, {stats.truncated} truncated at "
        f"{encoder.max_length} tokens; cache {cache.directory}")
  return stats


if __name__ == "__main__":
  main()
