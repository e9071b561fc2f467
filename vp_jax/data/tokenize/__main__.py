"""Command line of the tokenization job: `python -m vp_jax.data.tokenize --help`.

    python -m vp_jax.data.tokenize --out_dir=/data/tok/syn_32_17 --synthetic=32x32 --num_frames=17 \
        --num_examples=1024 --video_tokenizer=runs/magvit --audio_tokenizer=runs/soundstream \
        --text_encoder=/models/t5_xl [--runner=beam]

The tokenizers are loaded through their public `load` APIs (docs/interfaces.md).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

from vp_jax.data.synthetic.dataset import SyntheticConfig
from vp_jax.data.tokenize.features import TokenizeConfig, Tokenizers
from vp_jax.data.tokenize.sources import SyntheticSource, TfdsSource


def load_tokenizers(video_dir: str, audio_dir: str | None, text_dir: str | None,
                    text_cache_dir: str | None = None,
                    video_cpu_convs: str = "onednn") -> Tokenizers:
  """Loads the real tokenizers from their checkpoints (module-level so Beam can pickle it);
  `video_cpu_convs`: `VideoTokenizer`'s `cpu_convs`."""
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
  video = VideoTokenizer.load(video_dir, cpu_convs=video_cpu_convs)
  audio = None
  if audio_dir:
    from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
    audio = AudioTokenizer.load(audio_dir)
  text = cache = None
  if text_dir:
    from vp_jax.text import EmbeddingCache, TextEncoder
    text = TextEncoder.load(text_dir)
    if text_cache_dir:
      cache = EmbeddingCache(text_cache_dir, text.model_id)  # keyed by the weights, not the path
  return Tokenizers(video=video, audio=audio, text=text, text_cache=cache)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m vp_jax.data.tokenize", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out_dir", required=True)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--synthetic", metavar="RESOLUTION", help="e.g. 32x32, 128x128, 128x224")
  src.add_argument("--tfds_dir", help="a prepared tfds dataset directory (folder builders)")
  p.add_argument("--num_frames", type=int, default=17)
  p.add_argument("--num_examples", type=int, default=1024)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--split", default="train")
  p.add_argument("--video_tokenizer", required=True)
  p.add_argument("--video_cpu_convs", choices=("onednn", "onednn_bf16", "xla"), default="onednn",
                 help="the video tokenizer's convolutions on CPU (VideoTokenizer cpu_convs); "
                      "onednn_bf16: bfloat16 operands, ~1.6x faster where the CPU has "
                      "AVX512_BF16, ~3x with AMX; a few code bits differ (docs/magvit.md)")
  p.add_argument("--audio_tokenizer")
  p.add_argument("--text_encoder")
  p.add_argument("--text_cache")
  p.add_argument("--shard_size", type=int, default=64)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--no_stylization", action="store_true")
  p.add_argument("--runner", choices=("inprocess", "beam"), default="inprocess")
  p.add_argument("--beam_options", default="",
                 help="extra Beam flags, e.g. '--direct_num_workers=2'")
  args = p.parse_args(argv)
  if args.synthetic:
    source = SyntheticSource(SyntheticConfig(resolution=args.synthetic, num_frames=args.num_frames,
                                             num_examples=args.num_examples, seed=args.seed),
                             args.split)
  else:
    source = TfdsSource(args.tfds_dir, args.split)
  config = TokenizeConfig(shard_size=args.shard_size, batch_size=args.batch_size,
                          stylization=False if args.no_stylization else None)
  make = functools.partial(load_tokenizers, args.video_tokenizer, args.audio_tokenizer,
                           args.text_encoder, args.text_cache, args.video_cpu_convs)
  if args.runner == "beam":
    from apache_beam.options.pipeline_options import PipelineOptions
    from vp_jax.data.tokenize.beam_pipeline import tokenize_dataset_beam
    manifest = tokenize_dataset_beam(source, make, args.out_dir, config,
                                     pipeline_options=PipelineOptions(args.beam_options.split()))
  else:
    from vp_jax.data.tokenize.runner import tokenize_dataset
    manifest = tokenize_dataset(source, make(), args.out_dir, config)
  print(json.dumps({k: manifest[k] for k in ("num_examples", "num_shards", "token_counts")}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
