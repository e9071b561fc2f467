"""One process of a multi-process training run of the tiny test LM (run by tests/test_multiprocess.py
through launch/local_multiprocess.py; also runs alone as a single process).

    python tests/multiprocess_train_worker.py --workdir DIR [--train_steps 8] [--stop_at 4]
        [--batch_size 8] [--seq_len 16] [--save_every 2] [--sigterm_at K --sigterm_process P]

The model, optimizer and data are those of `tests.helpers.tiny_trainer` / `tiny_batches`; the mesh
is `make_mesh(MeshConfig(), None)`, all devices of all processes on the data axis, and each process
loads its `1 / process_count` of the rows of every global batch. Training resumes from DIR's latest
checkpoint. `--sigterm_at K` sends process P (default 0) SIGTERM during step K + 1, a preemption
notice as a scheduler gives one host. The last line printed is
`RESULT {"process": i, "process_count": n, "device_count": d, "start_step": s, "losses": [...],
"steps": [...], "latest_step": k, "preempted": b}` (json; losses of the steps trained in this
invocation).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vp_jax import distributed  # noqa: E402  (imports jax, runs nothing on it)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--train_steps", type=int, default=8,
                      help="total steps (fixes the learning-rate schedule)")
  parser.add_argument("--stop_at", type=int, default=None,
                      help="stop after this step (resume later with a larger value)")
  parser.add_argument("--batch_size", type=int, default=8, help="global batch")
  parser.add_argument("--seq_len", type=int, default=16)
  parser.add_argument("--save_every", type=int, default=2)
  parser.add_argument("--sigterm_at", type=int, default=None,
                      help="send SIGTERM to --sigterm_process when this batch index is drawn")
  parser.add_argument("--sigterm_process", type=int, default=0)
  args = parser.parse_args(argv)

  initialized = distributed.maybe_initialize()   # before any other jax use

  import jax
  from tests.helpers import TINY, SigtermAt
  from vp_jax.data.iterators import synthetic_lm_batches
  from vp_jax.models.toy_lm import ToyLM
  from vp_jax.parallel.mesh import MeshConfig, make_mesh
  from vp_jax.parallel.rules import DEFAULT_RULES
  from vp_jax.train.optim import OptimizerConfig
  from vp_jax.train.trainer import Trainer, TrainerConfig

  config = TrainerConfig(
      train_steps=args.train_steps, save_every=args.save_every, log_every=1, progress=False,
      optimizers={"model": OptimizerConfig(learning_rate=3e-3, warmup_steps=2)})
  trainer = Trainer(lambda rngs: ToyLM(TINY, rngs=rngs), config, make_mesh(MeshConfig(), None),
                    DEFAULT_RULES, args.workdir)
  batches = synthetic_lm_batches(args.batch_size, args.seq_len, TINY.vocab_size,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
  if args.sigterm_at is not None and jax.process_index() == args.sigterm_process:
    batches = SigtermAt(batches, args.sigterm_at)
  result = trainer.fit(batches, stop_at=args.stop_at)
  latest = trainer.checkpointer.latest_step()
  trainer.close()
  steps = sorted(result.losses)
  print("RESULT " + json.dumps({
      "process": jax.process_index(), "process_count": jax.process_count(),
      "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
      "start_step": result.start_step, "steps": steps,
      "losses": [result.losses[s] for s in steps], "latest_step": latest,
      "preempted": result.preempted}), flush=True)
  if initialized:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
