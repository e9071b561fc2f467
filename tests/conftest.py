"""Test setup: 8 simulated CPU devices for every test, LLVM optimization level 0, one persistent
compilation cache per test run and the launchers' malloc settings (all set before jax is imported).

Most of the suite's time is XLA compilation, and many tests compile the same program again: every
`Trainer` builds its own jitted step, so a resume test that trains, stops and resumes compiles the
same step three times. JAX's persistent cache, keyed by the program and its compile options, turns
the repeats into disk reads: the trainer's three resume tests took 147 s with it against 640-705 s
without (2-core CPU, 2026-12-01). The directory is shared by the run's pytest-xdist workers and
their subprocesses, and removed at the end of the run; set JAX_COMPILATION_CACHE_DIR to keep one.
"""
import os
import shutil
import tempfile

# LLVM optimization level 0: most of the suite is XLA:CPU compiling programs it then runs for a few
# steps. On the tiny MAGVIT GAN train step (2 devices) it cut the compile from 50.3 to 32.0 s while
# the step itself went from 0.07 to 0.11 s (2026-12-02); losses stay within ~1e-6 of the optimized
# build (tests/test_multiprocess.py has used it since it was written). The slow trainings, which
# run hundreds of steps, run their launchers as jobs of their own without these flags
# (tests.helpers.run_launcher): at -O0 SoundStream's GAN steps were over 10x slower.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Created by the first process that imports this file (the xdist controller, whose workers and
# their subprocesses inherit the variable); None in the processes that inherited it.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="vp_jax_test_jit_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# A size limit turns on JAX's LRU eviction, and with it the file lock around every read and write:
# two workers never see an entry half written.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 * 2 ** 30))

# The training launchers' glibc malloc choice (vp_jax/cpu_allocator.py), before jax starts its CPU
# threads: the suite trains (the slow PSNR test runs the whole video stage), so `auto` keeps glibc's
# defaults; VP_JAX_CPU_ALLOCATOR=on runs it with the keep-mapped settings. Huge pages for malloc
# cannot be switched on from here (glibc reads its tunables at start-up): `make test` starts pytest
# with them (`python -m vp_jax.cpu_allocator`).
from vp_jax import cpu_allocator  # noqa: E402
cpu_allocator.configure(training=True)

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests expect 8 simulated CPU devices (XLA_FLAGS)"


# Files that take minutes in all (the demo's whole-pipeline fixture, the trainer's 8-device and
# resume runs, the subprocess trainings), longest first. `make test` runs the suite in two
# pytest-xdist processes, one file at a time each (`--dist loadfile --no-loadscope-reorder`);
# handing these out first keeps one process from starting a long file while the other sits idle
# at the end. Only the order changes; a file missing from the list runs after them.
LONG_FILES_FIRST = (
    "test_demo.py", "test_trainer.py", "test_soundstream_api.py", "test_config.py",
    "test_data_tokenize.py", "test_magvit_train.py", "test_multiprocess.py",
    "test_tasks_train_lm.py", "test_prefix_lm_training.py",
)


def pytest_sessionfinish(session):
  """The process that created this run's cache directory removes it."""
  del session
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: in-file order kept
