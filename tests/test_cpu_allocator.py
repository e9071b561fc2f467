"""vp_jax.cpu_allocator: the mode variable, when `configure` applies the settings, and (in a fresh
process) that with them repeated MAGVIT encodes stop page-faulting their buffers in."""
import os
import subprocess
import sys
import textwrap

import pytest

from vp_jax import cpu_allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_allocator_mode_reads_the_variable_and_names_it_when_wrong():
  assert cpu_allocator.allocator_mode({}) == "auto"
  assert cpu_allocator.allocator_mode({"VP_JAX_CPU_ALLOCATOR": " OFF "}) == "off"
  assert cpu_allocator.allocator_mode({"VP_JAX_CPU_ALLOCATOR": ""}) == "auto"
  with pytest.raises(ValueError, match="VP_JAX_CPU_ALLOCATOR='sometimes'"):
    cpu_allocator.allocator_mode({"VP_JAX_CPU_ALLOCATOR": "sometimes"})


@pytest.fixture
def calls(monkeypatch):
  """Records mallopt calls instead of making them."""
  made = []
  monkeypatch.setattr(cpu_allocator, "_mallopt", lambda p, v: made.append((p, v)))
  return made


def test_configure_applies_the_three_settings(calls, monkeypatch):
  monkeypatch.setattr(cpu_allocator, "accelerator_runtimes", lambda: [])
  assert cpu_allocator.configure({}) is True
  assert calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1)]      # arena max, mmap max, trim threshold


def test_configure_off_and_auto_beside_an_accelerator_runtime_leave_malloc_alone(calls,
                                                                                monkeypatch):
  monkeypatch.setattr(cpu_allocator, "accelerator_runtimes", lambda: ["libtpu"])
  assert cpu_allocator.configure({"VP_JAX_CPU_ALLOCATOR": "off"}) is False
  assert cpu_allocator.configure({}) is False                               # auto, TPU runtime
  assert cpu_allocator.configure({"JAX_PLATFORMS": "tpu,cpu"}) is False
  assert calls == []
  assert cpu_allocator.configure({"JAX_PLATFORMS": "cpu"}) is True          # CPU chosen anyway
  assert cpu_allocator.configure({"VP_JAX_CPU_ALLOCATOR": "on"}) is True
  assert len(calls) == 6


def test_configure_for_training_applies_them_only_when_asked(calls, monkeypatch):
  """Training processes opt out of auto (the video stage's heap grew to 17.8 GB with them);
  VP_JAX_CPU_ALLOCATOR=on still applies them."""
  monkeypatch.setattr(cpu_allocator, "accelerator_runtimes", lambda: [])
  assert cpu_allocator.configure({}, training=True) is False
  assert cpu_allocator.configure({"VP_JAX_CPU_ALLOCATOR": "auto"}, training=True) is False
  assert calls == []
  assert cpu_allocator.configure({"VP_JAX_CPU_ALLOCATOR": "on"}, training=True) is True
  assert calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1)]


def test_set_keep_mapped_switches_to_the_values_and_back(calls):
  cpu_allocator.set_keep_mapped(True)
  cpu_allocator.set_keep_mapped(False)
  assert calls == [(-4, 0), (-1, 2**31 - 1), (-4, 65536), (-1, 128 * 1024)]


def test_accelerator_runtimes_picks_the_jax_tpu_and_gpu_runtimes(monkeypatch):
  class Dist:
    def __init__(self, name):
      self.metadata = {"Name": name}

  names = ["jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "jax_cuda12_pjrt", "jax-rocm60-plugin",
           "torch", "nvidia-cublas-cu12", None]
  monkeypatch.setattr(cpu_allocator.importlib.metadata, "distributions",
                      lambda: [Dist(n) for n in names])
  assert cpu_allocator.accelerator_runtimes() == ["jax-cuda12-plugin", "jax-rocm60-plugin",
                                                  "jax_cuda12_pjrt", "libtpu"]


_FAULTS = textwrap.dedent("""
    import resource
    from vp_jax import cpu_allocator
    cpu_allocator._mallopt(cpu_allocator.M_ARENA_MAX, 1)          # before jax starts its threads
    import jax, numpy as np
    from vp_jax.models.magvit import preset
    from vp_jax.models.magvit.tokenizer import create_tokenizer
    from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
    tok = VideoTokenizer.from_module(create_tokenizer(preset("tiny")))
    x = np.random.RandomState(0).randint(0, 256, (1, 17, 128, 128, 3)).astype(np.uint8)
    jax.block_until_ready(tok.encode(x))                           # compile
    for keep in (False, True):                                     # glibc defaults, then kept
      cpu_allocator.set_keep_mapped(keep)
      faults = []
      for _ in range(8):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(tok.encode(x))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
      print("keep" if keep else "default", *faults[2:])          # after two calls to settle
""")


@pytest.mark.skipif(cpu_allocator._libc() is None, reason="needs Linux with glibc")
def test_keep_mapped_stops_encode_faulting_its_buffers_in():
  # MAGVIT `tiny` at 1x17x128x128: its activations (up to ~27 MB) come from mmap with glibc's
  # defaults, ~18k minor faults on every call (measured); kept mapped, most calls fault (almost)
  # none. The heap still grows now and then (a freed block that an aligned request does not
  # fit), so the check is on the median and the total, not on every call.
  env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True,
                       timeout=600, check=True).stdout.split("\n")
  faults = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in out
            if line.startswith(("default", "keep"))}
  assert min(faults["default"]) > 10_000, faults
  # Median: 0 on an idle machine; a few dozen seen with three more copies of this test running.
  assert sorted(faults["keep"])[len(faults["keep"]) // 2] < 1_000, faults
  assert sum(faults["keep"]) < sum(faults["default"]) / 3, faults
