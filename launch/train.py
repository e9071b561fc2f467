"""Train a vp_jax model from gin files, t5x style.

  python launch/train.py --gin_file=platforms/cpu.gin --gin_file=models/toy_lm.gin --gin.MODEL_DIR='"/tmp/run"' \
      --gin.TRAIN_STEPS=200

Under several processes (`launch/local_multiprocess.py`, a TPU pod slice, a GPU cluster) set the
VP_JAX_* variables (see vp_jax/distributed.py); `jax.distributed` is initialized before anything else.
"""
import sys


def main(argv):
  from vp_jax import cpu_allocator
  cpu_allocator.configure(training=True)  # first: before jax starts its CPU threads
  from vp_jax import distributed
  distributed.maybe_initialize()
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.train(), argv)


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
