"""vp_jax.cpu_allocator: the mode variable, when `configure` applies the settings, and (in fresh
processes) that with them a repeated jitted call stops page-faulting its output buffer in."""
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
    import resource, sys
    from vp_jax import cpu_allocator
    print("configured", cpu_allocator.configure())
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: x + 1.0)
    x = jnp.zeros((24, 1024, 1024), jnp.float32)      # 96 MB: above glibc's largest mmap threshold
    faults = []
    for _ in range(8):
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      y = f(x).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
      assert float(y[3, 5, 7]) == 1.0
      del y
    print("faults", *faults[4:])      # the heap settles within the first three calls
""")


@pytest.mark.skipif(cpu_allocator._libc() is None, reason="needs Linux with glibc")
def test_keep_mapped_stops_the_repeated_output_buffer_faulting_in():
  def run(mode):
    env = {**os.environ, "VP_JAX_CPU_ALLOCATOR": mode, "PYTHONPATH": REPO,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split("\n")
    configured = next(line for line in out if line.startswith("configured")).split()[1]
    faults = [int(v) for v in next(line for line in out if line.startswith("faults")).split()[1:]]
    return configured, faults

  off, faults_off = run("off")
  on, faults_on = run("on")
  assert (off, on) == ("False", "True")
  # 96 MB of 4 KiB pages = 24576 faults per call when the buffer is mapped afresh each call.
  assert min(faults_off) > 20000, faults_off
  assert max(faults_on) < 1000, faults_on
