"""Multi-process training on localhost: 2 jax processes x 1 CPU device, through
launch/local_multiprocess.py and vp_jax.distributed, train, checkpoint jointly (Orbax) and resume, and
match a single-process run over 2 simulated devices of the same global batches; and a preemption
notice (SIGTERM) to one of the processes stops both at one jointly saved step."""
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers import tiny_batches, tiny_trainer
from vp_jax.checkpoint.manager import Checkpointer

pytestmark = pytest.mark.multiprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local_multiprocess.py")
WORKER = os.path.join(REPO, "tests", "multiprocess_train_worker.py")
TRAIN_STEPS, FIRST_STOP, SAVE_EVERY = 8, 4, 2
BATCH, SEQ = 8, 16          # global batch: each of the 2 processes loads 4 of its 8 rows
TIMEOUT_S = 240


def _env(cache_dir):
  env = dict(os.environ)
  # The test process has 8 simulated devices (conftest's XLA_FLAGS); the workers must not: each gets
  # VP_JAX_LOCAL_DEVICES=1 from the launcher. Optimization level 0 halves XLA:CPU compile time; the
  # losses stay within ~1e-6 of the optimized build. The persistent compilation cache lets the
  # resumed run reuse the first run's executables.
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  return env


def _start(workdir, stop_at, log_path, cache_dir, *, train_steps=TRAIN_STEPS,
           save_every=SAVE_EVERY, extra=()):
  cmd = [sys.executable, LAUNCHER, "--num_processes", "2", "--local_devices", "1",
         "--timeout", str(TIMEOUT_S), "--",
         sys.executable, WORKER, "--workdir", str(workdir), "--train_steps", str(train_steps),
         "--stop_at", str(stop_at), "--batch_size", str(BATCH), "--seq_len", str(SEQ),
         "--save_every", str(save_every), *extra]
  log = open(log_path, "w")
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(cache_dir),
                          cwd=REPO), log


def _finish(proc_and_log, log_path):
  proc, log = proc_and_log
  try:
    code = proc.wait(timeout=TIMEOUT_S + 30)
  finally:
    if proc.poll() is None:
      proc.kill()
    log.close()
  text = open(log_path).read()
  assert code == 0, f"launcher exited with {code}:\n{text[-6000:]}"
  results = {}
  for line in text.splitlines():
    prefix, _, rest = line.partition(" ")
    if rest.startswith("RESULT "):
      results[prefix] = json.loads(rest[len("RESULT "):])
  assert sorted(results) == ["[p0]", "[p1]"], f"missing RESULT lines:\n{text[-6000:]}"
  assert [results[p]["process"] for p in ("[p0]", "[p1]")] == [0, 1]
  return results["[p0]"], results["[p1]"]


def _check_first_run(p0, p1, ckpt_dir):
  for r in (p0, p1):
    assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 2, 1)
    assert r["start_step"] == 0 and r["steps"] == list(range(1, FIRST_STOP + 1))
    assert r["latest_step"] == FIRST_STOP
  assert p0["losses"] == p1["losses"]           # one global computation, seen by both processes
  step_dir = ckpt_dir / str(FIRST_STOP)
  assert (step_dir / "_CHECKPOINT_METADATA").exists()
  # Both processes wrote their shards of the state (Orbax OCDBT, one file set per process).
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= {p.name for p in (step_dir / "state").iterdir()}
  assert not [p.name for p in ckpt_dir.iterdir() if "tmp" in p.name], "unfinished checkpoint"


def test_two_processes_match_one_process_and_resume(tmp_path):
  started = time.perf_counter()
  workdir, cache = tmp_path / "run", tmp_path / "jax_cache"
  ckpt_dir = workdir / "checkpoints"
  first = _start(workdir, FIRST_STOP, tmp_path / "first.log", cache)

  # Meanwhile (in a thread, so the resumed run can start as soon as the first one ends), the
  # reference: one process, 2 simulated devices, the same model, optimizer, steps and global batches
  # (tiny_batches(8, 16) is the batch the 2 processes split row-wise).
  reference = tiny_trainer(devices=2, train_steps=TRAIN_STEPS, save_every=SAVE_EVERY)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    ref_future = pool.submit(reference.fit, tiny_batches(batch_size=BATCH, seq_len=SEQ))
    try:
      p0, p1 = _finish(first, tmp_path / "first.log")
      _check_first_run(p0, p1, ckpt_dir)
      # Resume: the same command with a later stop continues at the saved step and data position.
      q0, q1 = _finish(_start(workdir, TRAIN_STEPS, tmp_path / "second.log", cache),
                       tmp_path / "second.log")
    finally:
      ref_result = ref_future.result()
  ref = [ref_result.losses[s] for s in range(1, TRAIN_STEPS + 1)]
  np.testing.assert_allclose(p0["losses"], ref[:FIRST_STOP], rtol=1e-5)

  for r in (q0, q1):
    assert r["start_step"] == FIRST_STOP
    assert r["steps"] == list(range(FIRST_STOP + 1, TRAIN_STEPS + 1))
    assert r["latest_step"] == TRAIN_STEPS
  assert q0["losses"] == q1["losses"]
  np.testing.assert_allclose(q0["losses"], ref[FIRST_STOP:], rtol=1e-5)
  losses = p0["losses"] + q0["losses"]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses   # it learns

  # The 2-process checkpoint restores in this single process onto 2 devices, at the final step and
  # data position, with parameters matching the single-process run's.
  ckpt = Checkpointer(ckpt_dir, create=False)
  try:
    assert ckpt.latest_step() == TRAIN_STEPS
    state, data_state = ckpt.restore(reference.abstract_state())
  finally:
    ckpt.close()
  assert int(jax.device_get(state.step)) == TRAIN_STEPS
  assert data_state == {"index": TRAIN_STEPS}
  restored = jax.tree.leaves(jax.device_get(state.params))
  expected = jax.tree.leaves(jax.device_get(ref_result.state.params))
  assert len(restored) == len(expected)
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(restored, expected))
  assert diff < 1e-4, diff
  print(f"multiprocess test: {time.perf_counter() - started:.1f} s, max param diff {diff:.2e}")


def test_sigterm_to_one_process_stops_both_at_one_saved_step(tmp_path):
  """A preemption notice to one host (SIGTERM to process 1 during step 4): JAX's preemption sync
  service (`Checkpointer.reached_preemption`) gives both processes the same step, both save it
  jointly and stop, and the run resumes there. The step is a few past 4 (the notice travels
  through the coordinator), so the run is long enough that stopping at all is the signal."""
  workdir, cache = tmp_path / "run", tmp_path / "jax_cache"
  ckpt_dir, steps = workdir / "checkpoints", 2000
  p0, p1 = _finish(_start(workdir, steps, tmp_path / "first.log", cache, train_steps=steps,
                          save_every=steps, extra=["--sigterm_at", "3", "--sigterm_process", "1"]),
                   tmp_path / "first.log")
  assert p0["preempted"] and p1["preempted"]
  stop = p0["latest_step"]
  assert 4 <= stop < steps, stop
  print(f"preemption notice during step 4, both processes stopped after step {stop}")
  for r in (p0, p1):
    assert r["steps"] == list(range(1, stop + 1)) and r["latest_step"] == stop
  assert p0["losses"] == p1["losses"]
  # The only checkpoint is the preemption step's (save_every is the run's length), written by both.
  assert sorted(p.name for p in ckpt_dir.iterdir()) == [str(stop)]
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= {
      p.name for p in (ckpt_dir / str(stop) / "state").iterdir()}

  q0, q1 = _finish(_start(workdir, stop + 2, tmp_path / "second.log", cache, train_steps=steps,
                          save_every=steps), tmp_path / "second.log")
  for r in (q0, q1):
    assert not r["preempted"] and r["start_step"] == stop
    assert r["steps"] == [stop + 1, stop + 2] and r["latest_step"] == stop + 2
