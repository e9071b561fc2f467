"""Train the MAGVIT-v2 video tokenizer from gin files (the LM's launch/train.py is seqio-based).

  python launch/train_video_tokenizer.py --gin_file=platforms/cpu.gin \
      --gin_file=models/magvit_small.gin --gin.MODEL_DIR="'/tmp/magvit'" --gin.TRAIN_STEPS=3000

Image pretraining then inflation: run with models/magvit_small_image.gin into one workdir, then
models/magvit_small.gin into another with --gin.train_video_tokenizer.init_from="'<image workdir>'".
"""
import sys


def main(argv):
  from vp_jax import distributed
  distributed.maybe_initialize()
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.train_video_tokenizer(), argv)


if __name__ == "__main__":
  main(sys.argv[1:])
