"""Train the SoundStream audio tokenizer from gin files (the LM's launch/train.py is seqio-based).

  python launch/train_audio_tokenizer.py --gin_file=models/soundstream_small.gin \\
      --gin.MODEL_DIR='"/tmp/soundstream"' --gin.TRAIN_STEPS=2000

Then `AudioTokenizer.load("/tmp/soundstream")`. Resumes from the latest checkpoint in MODEL_DIR.
"""
import sys


def main(argv):
  from vp_jax import cpu_allocator
  cpu_allocator.configure(training=True)  # first: before jax starts its CPU threads
  from vp_jax import distributed
  distributed.maybe_initialize()
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.train_soundstream(), argv)


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
