"""Train the MAGVIT-v2 video tokenizer from gin files (the LM's launch/train.py is seqio-based).

  python launch/train_video_tokenizer.py --gin_file=platforms/cpu.gin \
      --gin_file=models/magvit_small.gin --gin.MODEL_DIR="'/tmp/magvit'" --gin.TRAIN_STEPS=3000

Image pretraining then inflation (the measured recipe, docs/magvit.md): models/magvit_small_image.gin
into one workdir, then models/magvit_small_video.gin into another with
--gin.INIT_FROM="'<image workdir>'".
"""
import sys


def main(argv):
  from vp_jax import cpu_allocator
  cpu_allocator.configure(training=True)  # first: before jax starts its CPU threads
  from vp_jax import distributed
  distributed.maybe_initialize()
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.train_video_tokenizer(), argv)


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
