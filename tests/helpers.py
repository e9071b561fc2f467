"""Small builders shared by the tests: a tiny LM trainer over a chosen device subset, the
benchmark scripts loaded as modules, and training launchers run as real jobs (their own process,
the machine's devices, XLA's default optimization level) with their logged scalars read back."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.data.iterators import CheckpointableIterator, synthetic_lm_batches
from vp_jax.models.toy_lm import ToyLM, ToyLMConfig
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

TINY = ToyLMConfig(vocab_size=64, max_len=16, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
                   dropout=0.1)


def tiny_trainer(workdir=None, *, devices=1, mesh=MeshConfig(), model=TINY, rules=DEFAULT_RULES,
                 model_cls=None, **overrides) -> Trainer:
  defaults = dict(train_steps=12, save_every=4, log_every=1, progress=False,
                  optimizers={"model": OptimizerConfig(learning_rate=3e-3, warmup_steps=2)})
  defaults.update(overrides)
  config = TrainerConfig(**defaults)
  cls = model_cls or ToyLM
  return Trainer(lambda rngs: cls(model, rngs=rngs), config,
                 make_mesh(mesh, jax.devices()[:devices]), rules, workdir)


def tiny_batches(batch_size=8, seq_len=16, seed=0):
  return synthetic_lm_batches(batch_size, seq_len, TINY.vocab_size, seed=seed)


class PoisonableLM(ToyLM):
  """ToyLM whose loss is NaN on batches that carry a non-zero `poison` entry."""

  def loss(self, batch, *, key, train, group="model"):
    loss, metrics = super().loss(batch, key=key, train=train, group=group)
    poison = batch["poison"].max() > 0 if "poison" in batch else False
    return jnp.where(poison, jnp.nan, loss), metrics


class SigtermAt(CheckpointableIterator):
  """Sends this process SIGTERM (a preemption notice) when batch index `at` of another iterator is
  drawn, i.e. during step `at + 1`; the batches and the saved data position are the inner ones."""

  def __init__(self, inner: CheckpointableIterator, at: int):
    self.inner, self.at, self.drawn = inner, at, 0

  def __next__(self):
    if self.drawn == self.at:
      os.kill(os.getpid(), signal.SIGTERM)
    self.drawn += 1
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


class Poisoned(CheckpointableIterator):
  """Adds `poison` (1 at the given batch indices, else 0) to the batches of another iterator."""

  def __init__(self, inner: CheckpointableIterator, poison_at: set[int]):
    self.inner, self.poison_at, self.index = inner, poison_at, 0

  def __next__(self):
    batch = dict(next(self.inner))
    rows = batch["inputs"].shape[0]
    batch["poison"] = np.full((rows,), int(self.index in self.poison_at), np.int32)
    self.index += 1
    return batch

  def get_state(self):
    return {"inner": self.inner.get_state(), "index": self.index}

  def set_state(self, state):
    self.inner.set_state(state["inner"])
    self.index = state["index"]


class TwoGroupGAN(nnx.Module):
  """A minimal GAN-shaped model: generator and discriminator trained by separate optimizers.

  `calls` is a non-parameter variable counting loss evaluations, to check that model variables
  other than parameters flow through the step and the checkpoint.
  """

  def __init__(self, rngs: nnx.Rngs):
    self.gen = nnx.Linear(4, 4, rngs=rngs)
    self.disc = nnx.Linear(4, 1, rngs=rngs)
    self.calls = nnx.Variable(jnp.zeros((), jnp.float32))

  def optimizer_groups(self):
    return {"generator": ("gen",), "discriminator": ("disc",)}

  def loss(self, batch, *, key, train, group):
    self.calls[...] = self.calls[...] + 1
    fake = self.gen(batch["z"])
    if group == "generator":
      loss = -jnp.mean(self.disc(fake))
      loss = jnp.where(batch["nan_generator"].max() > 0, jnp.nan, loss)
    else:
      loss = (jnp.mean(jax.nn.relu(1 - self.disc(batch["real"])))
              + jnp.mean(jax.nn.relu(1 + self.disc(jax.lax.stop_gradient(fake)))))
    return loss, {}


REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def load_benchmark(name: str):
  """benchmarks/<name>.py as a fresh module object (the folder is not a package; each call
  executes the script's top level again, so a test may patch the module it gets freely)."""
  spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def reference_python() -> str:
  """The PyTorch reference venv's interpreter ($TORCHREF_PYTHON, else benchmarks/torchref.py's
  default); skips the calling test where there is none."""
  python = os.environ.get("TORCHREF_PYTHON", load_benchmark("torchref").DEFAULT_PYTHON)
  if not os.path.exists(python):
    pytest.skip(f"no reference venv at {python} (make .venv-torchref/.installed)")
  return python


def run_launcher(script: str, argv) -> None:
  """launch/<script> with `argv` in a process of its own, as a user runs it: on the machine's real
  devices and at XLA's default optimization level. The suite's XLA_FLAGS (8 simulated devices, LLVM
  -O0 for quick compiles; tests/conftest.py) are dropped: the slow trainings run hundreds of steps,
  and at -O0 SoundStream's GAN steps ran over 10x slower."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  subprocess.run([sys.executable, str(REPO / "launch" / script), *argv], env=env, cwd=REPO,
                 check=True)


def logged_scalars(workdir, tag: str) -> dict[int, float]:
  """step -> value of the scalar `tag` the Trainer logged under `workdir`/tensorboard."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  from tensorboard.util import tensor_util
  files = sorted((pathlib.Path(workdir) / "tensorboard").glob("events.out.tfevents*"))
  out: dict[int, float] = {}
  for f in files:
    events = EventAccumulator(str(f), size_guidance={"tensors": 0})
    events.Reload()
    if tag in events.Tags()["tensors"]:
      for e in events.Tensors(tag):
        out[e.step] = float(tensor_util.make_ndarray(e.tensor_proto).reshape(()))
  return out
