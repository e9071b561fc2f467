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
decode 1.11-1.26x faster with XLA's convolutions; with the oneDNN ones the tokenizer now uses
(fewer buffers: 7.8k / 19.3k faults per encode / decode), 1.08x / 1.07x, and 1.08x / 1.21x with
bfloat16 conv operands (best calls, 2026-12-04, `--cpu_convs`); the MAGVIT image-stage train step
1.07-1.19x faster (two runs of the launcher) with identical losses. Any one or two of the settings
alone left the faults.

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

Transparent huge pages for malloc, in training too (`restart_with_huge_pages`, 2026-12-03, stop
37). With glibc's defaults the training step's large buffers still come fresh from the kernel on
every step, 4 KB page by 4 KB page. On the 2-core AMD EPYC VM of stop 37 that cost was far higher
than on stop 36's: the small video stage (launcher, 30 steps from the same image model) ran at
7.5-7.9 s per step with 162 s of its 467 s CPU time in the kernel and 44.3 M minor faults. With
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35: malloc asks for transparent huge pages with
madvise, so one fault maps 2 MB) the same 30 steps ran at 4.8 s per step, 55 s in the kernel, 0.60 M
faults, the same peak RSS (8.06 / 8.07 GB). Unlike the settings above it keeps glibc's handing back
of memory, so it does not grow the heap. A tunable is read only when the process starts, so the
launch scripts' `__main__` blocks call `restart_with_huge_pages()` first: it re-executes the same
command line with the tunable added where it is missing and has an effect (glibc >= 2.35, the
kernel's THP mode not `never`), under the same VP_JAX_CPU_ALLOCATOR rule as above minus the
training opt-out (`off` never, `auto` not where an accelerator runtime drives jax).
`python -m vp_jax.cpu_allocator CMD ...` runs any command with it (`make test` runs pytest so).
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import platform
import re
import sys
from typing import Mapping, Sequence

ENV_VAR = "VP_JAX_CPU_ALLOCATOR"
MODES = ("auto", "on", "off")

# mallopt parameters (glibc malloc.h) and glibc's defaults for the two that the benchmark switches.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
KEEP_MAPPED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}

_ACCELERATOR_PREFIXES = ("libtpu", "jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm")

TUNABLES_VAR = "GLIBC_TUNABLES"
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
HUGE_PAGES_MIN_GLIBC = (2, 35)        # the first glibc with glibc.malloc.hugetlb
THP_ENABLED_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


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
  if mode == "auto" and (training or not _cpu_computes(environ)):
    return False
  _mallopt(M_ARENA_MAX, 1)
  set_keep_mapped(True)
  return True


def _cpu_computes(environ: Mapping[str, str]) -> bool:
  """False where an accelerator runtime is installed and JAX_PLATFORMS does not pick the CPU."""
  platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
  return platforms.startswith("cpu") or not accelerator_runtimes()


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the running glibc, or None off Linux/glibc."""
  libc = _libc()
  if libc is None:
    return None
  libc.gnu_get_libc_version.restype = ctypes.c_char_p
  major, minor = libc.gnu_get_libc_version().decode().split(".")[:2]
  return int(major), int(minor)


def transparent_huge_pages_mode(path: str = THP_ENABLED_FILE) -> str | None:
  """The kernel's THP mode, the bracketed word of `path` ("always", "madvise" or "never"), or None
  where the file is missing."""
  try:
    with open(path) as f:
      match = re.search(r"\[(\w+)\]", f.read())
  except OSError:
    return None
  return match.group(1) if match else None


def huge_pages_environment(environ: Mapping[str, str] | None = None, *,
                           glibc: tuple[int, int] | None = None,
                           thp_mode: str | None = None) -> dict[str, str] | None:
  """`environ` (default os.environ) with glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES, or None
  where nothing is to change: the tunable is already set (to any value), VP_JAX_CPU_ALLOCATOR is
  off, or auto where an accelerator runtime drives jax, or it would have no effect (glibc older
  than 2.35 or none, THP `never` or absent). `glibc` and `thp_mode` default to this machine's."""
  environ = os.environ if environ is None else environ
  mode = allocator_mode(environ)
  tunables = environ.get(TUNABLES_VAR, "")
  if HUGE_PAGES_TUNABLE + "=" in tunables or mode == "off":
    return None
  glibc = glibc_version() if glibc is None else glibc
  thp_mode = transparent_huge_pages_mode() if thp_mode is None else thp_mode
  if glibc is None or glibc < HUGE_PAGES_MIN_GLIBC or thp_mode in (None, "never"):
    return None
  if mode == "auto" and not _cpu_computes(environ):
    return None
  return {**environ, TUNABLES_VAR: ":".join(t for t in (tunables, HUGE_PAGES_TUNABLE + "=1") if t)}


def restart_with_huge_pages() -> None:
  """Re-executes this process's command line with `huge_pages_environment()` where that is not None
  (glibc reads its tunables only at start-up); otherwise returns. Replaces the process: call it
  first thing in a script's `__main__` block, never from library code or inside a test process."""
  env = huge_pages_environment()
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def main(argv: Sequence[str]) -> None:
  """`python -m vp_jax.cpu_allocator CMD [ARG ...]`: runs CMD (looked up on PATH) in place of this
  process, with `huge_pages_environment()` where that is not None."""
  if not argv:
    sys.exit("usage: python -m vp_jax.cpu_allocator CMD [ARG ...]")
  os.execvpe(argv[0], list(argv), huge_pages_environment() or dict(os.environ))


if __name__ == "__main__":
  main(sys.argv[1:])
