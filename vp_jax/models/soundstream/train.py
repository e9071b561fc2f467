"""`train(...)`: trains SoundStream on synthetic audio through the shared Trainer (the gin entry
point `launch/train_audio_tokenizer.py` configures it).

Plain keyword arguments, no gin inside. The model config is written to
`{model_dir}/soundstream_config.json` so `AudioTokenizer.load(model_dir)` can rebuild the model.
Held-out evaluation uses clips from another seed (`data.HELDOUT_SEED`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Sequence

import jax

from vp_jax.config.json_file import config_from_dict, read_json_object
from vp_jax.data.synthetic import tokenizer_batches
from vp_jax.data.synthetic.dataset import SyntheticConfig
from vp_jax.models import registry
from vp_jax.models.soundstream import data
from vp_jax.models.soundstream import model as _model  # noqa: F401  (registers SoundStreamConfig)
from vp_jax.models.soundstream.config import SoundStreamConfig
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules
from vp_jax.train.trainer import Trainer, TrainerConfig, TrainResult

log = logging.getLogger(__name__)
CONFIG_FILE = "soundstream_config.json"


def save_config(model_dir: str, cfg: SoundStreamConfig) -> str:
  path = os.path.join(model_dir, CONFIG_FILE)
  if jax.process_index() == 0:
    os.makedirs(model_dir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(dataclasses.asdict(cfg), f, indent=1, sort_keys=True)
  return path


def load_config(path: str) -> SoundStreamConfig:
  """The SoundStreamConfig a workdir recorded (`save_config`); errors name `path`."""
  return config_from_dict(SoundStreamConfig, read_json_object(path), path)


def make_trainer(model: SoundStreamConfig, trainer: TrainerConfig, mesh: MeshConfig = MeshConfig(),
                 logical_axis_rules: str | Sequence = "default", model_dir: str | None = None,
                 devices=None) -> Trainer:
  return Trainer(registry.factory(model), trainer, make_mesh(mesh, devices),
                 get_rules(logical_axis_rules), workdir=model_dir)


def train(*, model_dir: str, model: SoundStreamConfig, trainer: TrainerConfig,
          batch_size: int = 16, clip_samples: int = 10_240, data_seed: int = 0,
          dataset: SyntheticConfig | None = None,
          mesh: MeshConfig = MeshConfig(), logical_axis_rules: str | Sequence = "default",
          eval_batch_size: int = 16) -> TrainResult:
  """Trains `model` on synthetic audio clips of `clip_samples` samples (tones, chirps, clicks; or,
  with `dataset`, crops of the built-in dataset's soundtracks, held out: its validation split),
  checkpointing to `model_dir`; resumes from the latest checkpoint there."""
  if batch_size < 1 or clip_samples < model.hop_length:
    raise ValueError(f"batch_size={batch_size} must be >= 1 and clip_samples={clip_samples} >= "
                     f"one frame ({model.hop_length}).")
  save_config(model_dir, model)
  runner = make_trainer(model, trainer, mesh, logical_axis_rules, model_dir)
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if dataset is not None:
    if dataset.sample_rate != model.sample_rate:
      raise ValueError(f"dataset sample_rate {dataset.sample_rate} != the model's "
                       f"{model.sample_rate}.")
    train_iter = tokenizer_batches.audio_batches(dataset, batch_size, clip_samples, **where)
    eval_fn = lambda: tokenizer_batches.audio_batches(dataset, eval_batch_size, clip_samples,
                                                      split="validation", **where)
  else:
    train_iter = data.synthetic_batches(batch_size, clip_samples, seed=data_seed,
                                        sample_rate=model.sample_rate, **where)
    eval_fn = lambda: data.synthetic_batches(eval_batch_size, clip_samples,
                                             seed=data.HELDOUT_SEED,
                                             sample_rate=model.sample_rate, **where)
  t0 = time.perf_counter()
  try:
    result = runner.fit(train_iter, eval_fn)
  finally:
    runner.close()
  steps = sorted(result.losses)
  if jax.process_index() == 0 and steps:
    last = result.eval_metrics[max(result.eval_metrics)] if result.eval_metrics else {}
    print(f"Trained SoundStream: steps {result.start_step} -> {steps[-1]} in "
          f"{time.perf_counter() - t0:.1f} s; loss {result.losses[steps[0]]:.3f} -> "
          f"{result.losses[steps[-1]]:.3f}"
          + (f"; held-out log-mel distance {last['generator/log_mel_distance']:.3f}, SNR "
             f"{last['generator/snr_db']:.2f} dB" if last else "")
          + f"; checkpoints in {model_dir}/checkpoints", flush=True)
  return result
