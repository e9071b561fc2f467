"""glibc malloc settings that keep XLA:CPU's per-call buffers mapped from one call to the next.

Why: an XLA:CPU executable allocates its temporaries and outputs on every call. With glibc's
default malloc, a block above the mmap threshold, and any block a worker thread takes from its own
arena (an mmap'd heap that glibc shrinks when its top is free), comes fresh from the kernel and goes
back to it when freed, so each call page-faults all of those pages in again: ~18k minor faults
(~70 MB) per encode of a 17x64x64 clip with the `small` MAGVIT preset, ~29k per decode, ~127k per
image-stage train step. With the three settings below most calls fault no page in once the heap
has grown to the working set (median 0 per encode; now and then the heap still grows: a freed block
that an aligned request does not fit). Measured on a 2-core AMD EPYC (2026-12-03; two runs with
both settings in one process, one of them `benchmarks/cpu_allocator.py`): encode 1.21-1.32x and
decode 1.11-1.26x faster; the MAGVIT image-stage train step 1.07-1.19x faster (two runs of the
launcher) with identical losses. Any one or two of the settings alone left the faults.

  M_ARENA_MAX = 1            every thread allocates from the main (sbrk) heap
  M_MMAP_MAX = 0             no block gets an mmap of its own
  M_TRIM_THRESHOLD = 2^31-1  freed memory at the top of the heap stays mapped

The cost: the process keeps its high-water memory mapped (on a 600-step image-stage run the RSS was
flat at 3.95 GB, against 2.2-2.6 GB with glibc's defaults), and all threads share one arena lock.
**In training it can be far worse:** the small preset's video stage (batches of 2x17x64x64 clips,
`models/magvit_small_video.gin`) grew to 17.8 GB of RSS within 4 minutes and its steps took 7.4-10
s, slowing as the heap grew, against a flat 4.4 s with glibc's defaults (launcher, 40 steps each
from the same image model, 2026-12-03, stop 36): with nothing handed back, the heap kept growing.
So the settings are for inference where the CPU is the compute, and training launchers opt out of
the default. `configure()` reads VP_JAX_CPU_ALLOCATOR:

  auto (default)  on for inference (`configure()`), unless an accelerator runtime is installed
                  (libtpu, a jax CUDA or ROCm plugin) and JAX_PLATFORMS does not start with "cpu";
                  off where the caller says it trains (`configure(training=True)`: the launchers
                  that train, the demo, the test suite)
  on / off        always / never

Call it at start-up, before jax creates its CPU client: a thread is bound to an arena at its first
allocation, so threads already running keep theirs. The launch scripts do, first thing. It changes
only where memory comes from, never what is computed (the image-stage run above logged the same
losses to the last digit). Linux with glibc only; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import platform
from typing import Mapping

ENV_VAR = "VP_JAX_CPU_ALLOCATOR"
MODES = ("auto", "on", "off")

# mallopt parameters (glibc malloc.h) and glibc's defaults for the two that the benchmark switches.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
KEEP_MAPPED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}

_ACCELERATOR_PREFIXES = ("libtpu", "jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm")


def allocator_mode(environ: Mapping[str, str] | None = None) -> str:
  """VP_JAX_CPU_ALLOCATOR from `environ` (default os.environ): auto, on or off."""
  environ = os.environ if environ is None else environ
  mode = environ.get(ENV_VAR, "auto").strip().lower() or "auto"
  if mode not in MODES:
    raise ValueError(f"{ENV_VAR}={environ.get(ENV_VAR)!r}: expected one of {', '.join(MODES)}.")
  return mode


def accelerator_runtimes() -> list[str]:
  """Installed distributions that give jax a TPU or GPU backend (libtpu, jax CUDA/ROCm plugins)."""
  names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
  return sorted(n for n in names if n.startswith(_ACCELERATOR_PREFIXES))


@functools.cache
def _libc():
  """The process's glibc (for mallopt), or None off Linux/glibc; looked up once (libc_ver reads
  the interpreter's binary)."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  libc = ctypes.CDLL(None)
  return libc if hasattr(libc, "mallopt") else None


def _mallopt(param: int, value: int) -> None:
  libc = _libc()
  if libc is None or libc.mallopt(param, value) != 1:
    raise OSError(f"mallopt({param}, {value}) failed.")


def set_keep_mapped(keep: bool) -> None:
  """Switches M_MMAP_MAX and M_TRIM_THRESHOLD between the keep-mapped values and glibc's defaults
  (M_ARENA_MAX cannot be undone for running threads; benchmarks/cpu_allocator.py times both)."""
  for param, value in (KEEP_MAPPED if keep else GLIBC_DEFAULTS).items():
    _mallopt(param, value)


def configure(environ: Mapping[str, str] | None = None, *, training: bool = False) -> bool:
  """Applies the three settings where VP_JAX_CPU_ALLOCATOR says so (see the module docstring);
  `training`: the process trains, so `auto` leaves malloc alone. Returns whether it applied them.
  Safe to call more than once."""
  environ = os.environ if environ is None else environ
  mode = allocator_mode(environ)
  if mode == "off" or _libc() is None:
    return False
  if mode == "auto" and training:
    return False
  if mode == "auto":
    platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
    if not platforms.startswith("cpu") and accelerator_runtimes():
      return False
  _mallopt(M_ARENA_MAX, 1)
  set_keep_mapped(True)
  return True
