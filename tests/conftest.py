"""Test setup: 8 simulated CPU devices for every test (set before jax is imported)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: in-file order kept
