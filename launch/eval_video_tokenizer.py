"""Score a trained video tokenizer on held-out moving-shape clips: mean PSNR (and each 16-clip
block's), per-frame PSNR, distinct codes, and for clips the keyframe-blend baseline and how much of
the chunk tokens depend on the in-between frames (vp_jax/models/magvit/evaluate.py; the figures
of docs/magvit.md "Status" and the slow PSNR test).

  python launch/eval_video_tokenizer.py --workdir runs/magvit_vid                 # latest step
  python launch/eval_video_tokenizer.py --workdir runs/magvit_vid --steps 200 400 --blocks 1
  python launch/eval_video_tokenizer.py --workdir runs/magvit_img --frames 1      # image model
  python launch/eval_video_tokenizer.py --workdir runs/magvit_vid --weights params # not the EMA
  python launch/eval_video_tokenizer.py --workdir runs/magvit_vid --cpu_convs onednn_bf16

One line per step on stdout; --json writes the full scores (a list, one per step).
"""
import argparse
import json
import sys


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True,
                 help="a train_video_tokenizer workdir (or its checkpoints/ folder)")
  p.add_argument("--steps", type=int, nargs="*", default=None,
                 help="committed steps to score (default: the latest)")
  p.add_argument("--frames", type=int, default=17, help="clip length: 1 (images) or 1 + 4k")
  p.add_argument("--size", type=int, default=64, help="height = width, a multiple of 8")
  p.add_argument("--blocks", type=int, default=8, help="blocks of held-out clips")
  p.add_argument("--block_size", type=int, default=16, help="clips per block")
  p.add_argument("--weights", default="auto", choices=("auto", "ema", "params"),
                 help="the generator's moving average (TrainerConfig.ema_decay) where the run "
                      "kept one (auto), always (ema), or the trained weights (params)")
  p.add_argument("--cpu_convs", default="onednn", choices=("onednn", "onednn_bf16", "xla"),
                 help="VideoTokenizer cpu_convs: oneDNN's convolutions (float32 or bfloat16 "
                      "operands) or XLA's")
  p.add_argument("--json", default=None, help="write the scores here as JSON")
  args = p.parse_args(argv)
  from vp_jax.data.formats import check_num_frames
  try:
    check_num_frames(args.frames)
  except ValueError as e:
    p.error(f"--frames: {e}")
  if args.size < 8 or args.size % 8:
    p.error(f"--size {args.size}: must be a positive multiple of 8.")
  if args.blocks < 1 or args.block_size < 1:
    p.error(f"--blocks {args.blocks} / --block_size {args.block_size}: must be >= 1.")
  return args


def main(argv):
  args = parse_args(argv)
  from vp_jax import cpu_allocator
  cpu_allocator.configure()           # before jax starts its CPU threads
  from vp_jax.models.magvit.evaluate import score_held_out
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
  scores = []
  for step in args.steps or [None]:
    tok = VideoTokenizer.load(args.workdir, step=step, weights=args.weights,
                              cpu_convs=args.cpu_convs)
    score = score_held_out(tok, num_frames=args.frames, height=args.size, width=args.size,
                           blocks=args.blocks, block_size=args.block_size,
                           keyframe_every=tok.config.temporal_factor)
    print(f"{score.summary()}; {tok.weights} weights; cpu_convs {args.cpu_convs}", flush=True)
    scores.append({**score.to_json(), "weights": tok.weights, "cpu_convs": args.cpu_convs})
  if args.json:
    with open(args.json, "w") as f:
      json.dump(scores, f, indent=1)
  return scores


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
