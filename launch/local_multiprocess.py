"""Runs one command as N jax processes on this machine: multi-host code, tested locally.

    python launch/local_multiprocess.py --num_processes 2 [--local_devices 1] [--port P] \\
        [--timeout 600] -- python my_train.py --workdir /tmp/run

Each process gets the same command with `VP_JAX_COORDINATOR=localhost:P`, `VP_JAX_NUM_PROCESSES`,
`VP_JAX_PROCESS_ID` (and `VP_JAX_LOCAL_DEVICES`, `JAX_PLATFORMS=cpu`) in its environment, so a
program that calls `vp_jax.distributed.maybe_initialize()` first becomes process i of an N-process
jax job on CPU, talking over localhost (gloo collectives) exactly as hosts of a pod slice do: each
loads its own rows of the batch, the mesh spans all processes' devices, Orbax checkpoints are
written jointly. It is a test harness, not a cluster launcher; on real clusters use the scheduler
(or `VP_JAX_AUTO_DISTRIBUTED=1`).

Output of process i is streamed line by line prefixed with `[pi] `. If one process fails, the
others are killed (a peer of a dead process would otherwise hang in a collective). The exit code is
0 if all processes succeed, the first failing process's code otherwise, and 124 on timeout.
`--local_devices` (default 1) sets `jax_num_cpu_devices`, which takes precedence over any
`--xla_force_host_platform_device_count` in XLA_FLAGS.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT_EXIT = 124


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(base: dict, *, port: int, num_processes: int, process_id: int,
                local_devices: int) -> dict:
  env = dict(base)
  env.update(VP_JAX_COORDINATOR=f"localhost:{port}", VP_JAX_NUM_PROCESSES=str(num_processes),
             VP_JAX_PROCESS_ID=str(process_id), VP_JAX_LOCAL_DEVICES=str(local_devices),
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("VP_JAX_AUTO_DISTRIBUTED", None)
  return env


def _pump(stream, prefix: str, out, lock: threading.Lock) -> None:
  for line in iter(stream.readline, b""):
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    with lock:
      out.write(f"{prefix}{text}\n")
      out.flush()
  stream.close()


def _kill(procs) -> None:
  """SIGTERM each still-running process group, then SIGKILL what is left after 5 s."""
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
  deadline = time.monotonic() + 5
  for p in procs:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      p.wait()


def launch(command: list[str], *, num_processes: int, local_devices: int = 1,
           port: int | None = None, timeout: float | None = None, env: dict | None = None,
           out=None) -> int:
  """Runs `command` as `num_processes` processes; returns the combined exit code."""
  if not command:
    raise ValueError("No command given (put it after `--`).")
  if num_processes < 1 or local_devices < 1:
    raise ValueError("--num_processes and --local_devices must be >= 1.")
  out = out or sys.stdout
  port = port or free_port()
  base = dict(os.environ if env is None else env)
  lock = threading.Lock()
  procs, pumps = [], []
  try:
    for i in range(num_processes):
      p = subprocess.Popen(
          command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
          env=process_env(base, port=port, num_processes=num_processes, process_id=i,
                          local_devices=local_devices))
      procs.append(p)
      t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", out, lock), daemon=True)
      t.start()
      pumps.append(t)
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        with lock:
          out.write(f"[launcher] process {i} exited with code {code}; stopping the others.\n")
        break
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        code = TIMEOUT_EXIT
        with lock:
          out.write(f"[launcher] timeout after {timeout:g} s; killing all processes.\n")
        break
      time.sleep(0.05)
  finally:
    _kill(procs)   # no-op for processes that exited; also runs on KeyboardInterrupt
    for t in pumps:
      t.join(timeout=5)
  return code if code >= 0 else 128 - code   # killed by signal N -> 128 + N


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if "--" in argv:
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1:]
  else:
    own, command = argv, []
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=(
      "%(prog)s --num_processes N [--local_devices D] [--port P] [--timeout S] -- command ..."))
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--local_devices", type=int, default=1,
                      help="CPU devices per process (default 1)")
  parser.add_argument("--port", type=int, default=None,
                      help="coordinator port on localhost (default: a free one)")
  parser.add_argument("--timeout", type=float, default=None,
                      help="seconds before all processes are killed (exit code 124)")
  args = parser.parse_args(own)
  if not command:
    parser.error("no command given; put it after `--`.")
  if args.num_processes < 1 or args.local_devices < 1:
    parser.error("--num_processes and --local_devices must be >= 1.")

  def on_signal(signum, frame):
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, on_signal)
  try:
    return launch(command, num_processes=args.num_processes, local_devices=args.local_devices,
                  port=args.port, timeout=args.timeout)
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
