"""Train the VideoPoet prefix LM on a task mixture (AGD batches) from gin files, t5x style.

  python launch/train_lm.py --gin_file=videopoet_lm.gin --gin.MODEL_DIR='"runs/lm"' \
      --gin.TOKENIZED_DATA="{'vid': 'tok/syn_32_17', 'img': 'tok/syn_32_1'}" \
      --gin.MIXTURE_OR_TASK_NAME="'vp_pretrain'" --gin.TRAIN_STEPS=1000

Same conventions as launch/train.py (VP_JAX_* variables for several processes).
"""
import sys


def main(argv):
  from vp_jax import cpu_allocator
  cpu_allocator.configure(training=True)  # first: before jax starts its CPU threads
  from vp_jax import distributed
  distributed.maybe_initialize()
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.train_lm(), argv)


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
