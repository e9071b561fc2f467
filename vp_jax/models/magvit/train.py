"""`train_video_tokenizer(...)`: train MAGVIT-v2 through the shared Trainer (gin entry point:
`launch/train_video_tokenizer.py`, configurable `train_video_tokenizer`).

Writes `magvit_config.json` to the model dir (what `VideoTokenizer.load` rebuilds the network
from). With `init_from` (an image-model workdir; the first run of a fresh video workdir only), the
image model's latest tokenizer weights are inflated into the video model and saved as the step-0
checkpoint, which the Trainer then resumes from: image training -> inflation -> video training
without a second loop. Data: the built-in moving-shape clips (`synthetic.py`); held-out eval clips
come from a different seed.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Sequence

import jax
from flax import nnx

from vp_jax.checkpoint.manager import Checkpointer
from vp_jax.config.json_file import config_from_dict, read_json_object
from vp_jax.data.synthetic import tokenizer_batches
from vp_jax.data.synthetic.dataset import SyntheticConfig
from vp_jax.models import registry
from vp_jax.models.magvit import synthetic
from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.inflation import inflate_tokenizer, temporal_tap_update_scale
from vp_jax.models.magvit.tokenizer import MagvitTokenizer
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules
from vp_jax.train.trainer import Trainer, TrainerConfig, TrainResult

log = logging.getLogger(__name__)

CONFIG_FILE = "magvit_config.json"
EVAL_SEED_OFFSET = 1_000_003


def write_model_config(model_dir: str, cfg: MagvitConfig) -> None:
  if jax.process_index() == 0:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, CONFIG_FILE), "w") as f:
      f.write(cfg.to_json())


def read_model_config(model_dir: str) -> MagvitConfig:
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: not a MAGVIT training workdir (train with "
                            f"launch/train_video_tokenizer.py).")
  return config_from_dict(MagvitConfig, read_json_object(path), path, build=MagvitConfig.from_dict)


def restore_tokenizer_params(model_dir: str, step: int | None = None,
                             sharding: jax.sharding.Sharding | None = None,
                             weights: str = "auto") -> tuple[dict, int, str]:
  """The tokenizer's parameter pure-dict of a workdir's latest (or given) committed checkpoint,
  without the discriminator, the optimizer state or the optimizer config that wrote them
  (`Checkpointer.restore_parts` onto the workdir config's abstract tokenizer; `weights`: "auto"
  takes the generator's moving average where the run kept one, "ema" / "params" force either).
  Arrays land on `sharding` (default: the first CPU device). Returns (params, step, "ema" or
  "params": which weights they are)."""
  cfg = read_model_config(model_dir)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: MagvitTokenizer(cfg, rngs=nnx.Rngs(0)))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
  ckpt = Checkpointer(os.path.join(model_dir, "checkpoints"), create=False, async_save=False)
  try:
    restored, step, averaged = ckpt.restore_parts({"params": {"tokenizer": template}}, step,
                                                  weights)
  finally:
    ckpt.close()
  return restored["params"]["tokenizer"], step, "ema" if averaged else "params"


def _inflate_into_step0(runner: Trainer, init_from: str, cfg: MagvitConfig) -> None:
  image_cfg = read_model_config(init_from)
  if image_cfg.temporal_kernel != 1:
    raise ValueError(f"init_from={init_from}: its model has temporal_kernel="
                     f"{image_cfg.temporal_kernel}; inflation starts from an image model (1).")
  image_params, image_step, image_weights = restore_tokenizer_params(init_from)
  state = runner.init_or_restore()
  params = dict(jax.device_get(state.params))
  params["tokenizer"] = inflate_tokenizer(image_params, params["tokenizer"], cfg,
                                          image_decoder_blocks=image_cfg.decoder_blocks)
  runner.checkpointer.save(0, runner.with_params(state, params), {"index": 0})
  runner.checkpointer.wait()
  log.info("Inflated %s (step %d, %s weights) into step 0 of %s", init_from, image_step,
           image_weights, runner.workdir)


def train_video_tokenizer(*, model_dir: str, model: MagvitConfig, trainer: TrainerConfig,
                          batch_size: int, num_frames: int = 17, height: int = 64,
                          width: int = 64, init_from: str | None = None,
                          dataset: SyntheticConfig | None = None,
                          mesh: MeshConfig = MeshConfig(),
                          logical_axis_rules: str | Sequence = "default") -> TrainResult:
  """Trains the tokenizer on moving-shape clips of num_frames x height x width (num_frames=1:
  image pretraining), or, with `dataset`, on the built-in dataset's clips of that config (its
  frames and resolution replace num_frames/height/width; held out: its validation split),
  checkpointing to `model_dir`; resumes from the latest checkpoint there."""
  if dataset is not None:
    (height, width), num_frames = dataset.hw, dataset.num_frames
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  model.validate()
  model.latent_shape(num_frames, height, width)     # raises on a bad clip shape
  mesh_ = make_mesh(mesh)
  rules = get_rules(logical_axis_rules)
  write_model_config(model_dir, model)
  scales = None
  if model.temporal_tap_lr_multiplier != 1.0:
    scales = {"generator": temporal_tap_update_scale(model.temporal_tap_lr_multiplier)}
  runner = Trainer(registry.factory(model), trainer, mesh_, rules, workdir=model_dir,
                   update_scales=scales)
  pi, pc = jax.process_index(), jax.process_count()
  if init_from and runner.checkpointer.latest_step() is None:
    _inflate_into_step0(runner, init_from, model)
  if dataset is not None:
    train_iter = tokenizer_batches.video_batches(dataset, batch_size, process_index=pi,
                                                 process_count=pc)
    eval_fn = lambda: tokenizer_batches.video_batches(dataset, batch_size, split="validation",
                                                      process_index=pi, process_count=pc)
  else:
    train_iter = synthetic.moving_shapes_iterator(batch_size, num_frames, height, width,
                                                  seed=trainer.seed, process_index=pi,
                                                  process_count=pc)
    eval_fn = lambda: synthetic.moving_shapes_iterator(
        batch_size, num_frames, height, width, seed=trainer.seed + EVAL_SEED_OFFSET,
        process_index=pi, process_count=pc)
  t0 = time.perf_counter()
  try:
    result = runner.fit(train_iter, eval_fn if trainer.eval_every else None)
  finally:
    runner.close()
  if pi == 0 and result.losses:
    steps = sorted(result.losses)
    print(f"Trained MAGVIT-v2 ({num_frames}x{height}x{width}): steps {result.start_step} -> "
          f"{steps[-1]} in {time.perf_counter() - t0:.1f} s; checkpoints in {model_dir}/checkpoints",
          flush=True)
  return result
