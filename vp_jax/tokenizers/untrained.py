"""Untrained tokenizer workdirs: a model config plus a step-0 checkpoint of randomly initialized
weights, written through the same path a training run uses (the shared Trainer's sharded init and
Checkpointer), so `VideoTokenizer.load` / `AudioTokenizer.load` read them like any trained run.

What for: tests and benchmarks of the code around the tokenizers (the offline tokenization job, its
token counts, resumption and throughput) need the real networks and their real loading path, not
trained weights; training one takes minutes to hours on CPU. The codes of an untrained tokenizer are
deterministic (seeded init) and in range, but carry little meaning.

    write_untrained_video_tokenizer("runs/magvit_tiny", magvit.preset("tiny"))
    tok = VideoTokenizer.load("runs/magvit_tiny")
"""
from __future__ import annotations

import os

import jax

from vp_jax.models import registry
from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.train import write_model_config
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.models.soundstream.train import save_config
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

# Both tokenizers train as GANs: the generator group, then the discriminator group.
_GROUPS = ("generator", "discriminator")


def _check_new(workdir: str) -> str:
  workdir = os.path.abspath(os.fspath(workdir))
  if os.path.exists(os.path.join(workdir, "checkpoints")):
    raise FileExistsError(f"{workdir}: already holds checkpoints/; refusing to add an untrained "
                          f"step 0 to an existing run.")
  return workdir


def _write_step0(workdir: str, model_config, seed: int) -> str:
  trainer = Trainer(registry.factory(model_config),
                    TrainerConfig(train_steps=1, seed=seed, progress=False,
                                  async_checkpointing=False,
                                  optimizers={g: OptimizerConfig() for g in _GROUPS}),
                    make_mesh(MeshConfig(), jax.devices()[:1]), DEFAULT_RULES, workdir)
  try:
    state = trainer.init_or_restore()
    trainer.checkpointer.save(0, state, {"untrained": True, "seed": seed})
  finally:
    trainer.close()
  return workdir


def write_untrained_video_tokenizer(workdir: str | os.PathLike, config: MagvitConfig,
                                    seed: int = 0) -> str:
  """`workdir/magvit_config.json` + `checkpoints/0` (MAGVIT-v2, random init from `seed`)."""
  workdir = _check_new(workdir)
  write_model_config(workdir, config)
  return _write_step0(workdir, config, seed)


def write_untrained_audio_tokenizer(workdir: str | os.PathLike, config: SoundStreamConfig,
                                    seed: int = 0) -> str:
  """`workdir/soundstream_config.json` + `checkpoints/0` (SoundStream, random init from `seed`)."""
  workdir = _check_new(workdir)
  save_config(workdir, config)
  return _write_step0(workdir, config, seed)
