"""The README's main command: the whole VideoPoet pipeline on the built-in dataset (vp_jax/demo/).

  python launch/demo.py --gin_file=demo.gin                       # runs/demo, the `cpu` preset
  python launch/demo.py --gin_file=demo.gin --gin.WORKDIR="'/tmp/d'" --gin.FORCE="('lm',)"

A second run reuses every finished stage; FORCE names stages to redo (that stage and the ones after).
"""
import sys


def main(argv):
  from vp_jax import cpu_allocator
  cpu_allocator.configure(training=True)  # first: before jax starts its CPU threads
  from vp_jax.config import configurables, gin_cli
  return gin_cli.run(lambda: configurables.run_demo(), argv, model_dir_macro="WORKDIR")


if __name__ == "__main__":
  from vp_jax import cpu_allocator
  cpu_allocator.restart_with_huge_pages()  # first: glibc reads GLIBC_TUNABLES only at start-up
  main(sys.argv[1:])
