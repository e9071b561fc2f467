"""Multi-process (multi-host) start-up: `maybe_initialize()` before any other use of jax.

A vp_jax program is the same script on every process. Each process loads its own rows of the global
batch (`synthetic_lm_batches(..., process_index=jax.process_index(),
process_count=jax.process_count())`), the mesh spans the devices of all processes
(`make_mesh(MeshConfig(), None)`), and `global_batch` assembles the per-process rows into global
arrays. What makes the processes one job is `jax.distributed.initialize`, configured here from the
environment:

  VP_JAX_COORDINATOR     host:port of process 0's coordination service (all processes use the
                         same value)
  VP_JAX_NUM_PROCESSES   number of processes in the job (>= 1)
  VP_JAX_PROCESS_ID      this process's index, 0 <= id < VP_JAX_NUM_PROCESSES
  VP_JAX_LOCAL_DEVICES   optional: the number of CPU devices this process exposes (sets
                         `jax_num_cpu_devices`, which takes precedence over
                         `--xla_force_host_platform_device_count`); CPU only

The three main variables are set together or not at all. For CPU processes the cross-process
collectives use gloo (`jax_cpu_collectives_implementation`), set explicitly here. On TPU pod slices
and GPU clusters (SLURM, Open MPI, Kubernetes ...), where jax detects the cluster itself, set
`VP_JAX_AUTO_DISTRIBUTED=1` instead and `jax.distributed.initialize()` is called without arguments.

`launch/local_multiprocess.py` starts N such processes on localhost to test multi-host code on one
machine.
"""
from __future__ import annotations

import os

import jax

COORDINATOR = "VP_JAX_COORDINATOR"
NUM_PROCESSES = "VP_JAX_NUM_PROCESSES"
PROCESS_ID = "VP_JAX_PROCESS_ID"
LOCAL_DEVICES = "VP_JAX_LOCAL_DEVICES"
AUTO = "VP_JAX_AUTO_DISTRIBUTED"
_EXPLICIT = (COORDINATOR, NUM_PROCESSES, PROCESS_ID)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class DistributedConfigError(ValueError):
  """The VP_JAX_* distributed environment variables are incomplete or malformed."""


def _int_var(name: str, value: str, minimum: int) -> int:
  try:
    number = int(value.strip())
  except ValueError:
    raise DistributedConfigError(f"{name}={value!r} is not an integer.") from None
  if number < minimum:
    raise DistributedConfigError(f"{name}={number} must be >= {minimum}.")
  return number


def _coordinator(value: str) -> str:
  host, sep, port = value.strip().rpartition(":")
  if not sep or not host:
    raise DistributedConfigError(f"{COORDINATOR}={value!r} must be host:port (e.g. "
                                 f"10.0.0.1:1234 or localhost:1234).")
  number = _int_var(COORDINATOR + " port", port, 1)
  if number > 65535:
    raise DistributedConfigError(f"{COORDINATOR}={value!r}: port {number} is out of range.")
  return f"{host}:{number}"


def read_env(environ=None) -> dict | None:
  """The `jax.distributed.initialize` arguments from the environment (plus `local_devices`), or
  None when no explicit variables are set. Raises `DistributedConfigError` if the set is
  incomplete or a value is malformed."""
  env = os.environ if environ is None else environ
  present = [n for n in _EXPLICIT if env.get(n, "").strip()]
  local = env.get(LOCAL_DEVICES, "").strip()
  if not present:
    if local:
      raise DistributedConfigError(
          f"{LOCAL_DEVICES} is set but {', '.join(_EXPLICIT)} are not; set all three to run "
          f"multi-process, or unset {LOCAL_DEVICES}.")
    return None
  missing = [n for n in _EXPLICIT if n not in present]
  if missing:
    raise DistributedConfigError(
        f"Multi-process start-up needs {', '.join(_EXPLICIT)} together; {', '.join(present)} "
        f"set but {', '.join(missing)} missing.")
  num = _int_var(NUM_PROCESSES, env[NUM_PROCESSES], 1)
  pid = _int_var(PROCESS_ID, env[PROCESS_ID], 0)
  if pid >= num:
    raise DistributedConfigError(f"{PROCESS_ID}={pid} must be < {NUM_PROCESSES}={num}.")
  return dict(coordinator_address=_coordinator(env[COORDINATOR]), num_processes=num,
              process_id=pid, local_devices=_int_var(LOCAL_DEVICES, local, 1) if local else None)


def _auto(environ) -> bool:
  value = environ.get(AUTO, "").strip().lower()
  if value in _TRUE:
    return True
  if value in _FALSE:
    return False
  raise DistributedConfigError(f"{AUTO}={environ[AUTO]!r}: use 1 or 0.")


def maybe_initialize() -> bool:
  """Initializes `jax.distributed` from the VP_JAX_* environment; returns whether it did.

  Call it first thing, before any jax computation or device query (the CPU device count and the
  collectives cannot change once jax's backends exist). Without the variables it does nothing and
  returns False, so single-process runs need no change.
  """
  env = os.environ
  args = read_env(env)
  auto = _auto(env)
  if args is not None and auto:
    raise DistributedConfigError(
        f"Set either {AUTO}=1 or {', '.join(_EXPLICIT)}, not both.")
  if args is None and not auto:
    return False
  if jax.distributed.is_initialized():
    raise RuntimeError("jax.distributed is already initialized; call "
                       "vp_jax.distributed.maybe_initialize() once, at start-up.")
  if auto:
    jax.distributed.initialize()
    return True
  # Gloo is jax 0.10's default for CPU; set it anyway so a changed default or a user flag cannot
  # leave multi-process CPU runs without cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  local_devices = args.pop("local_devices")
  if local_devices is not None:
    jax.config.update("jax_num_cpu_devices", local_devices)
  jax.distributed.initialize(**args)
  return True
