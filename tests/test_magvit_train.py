"""The trainable MAGVIT-v2 through the shared Trainer: two optimizer groups, discriminator warm-up,
LeCAM statistics, gin entry point, loading the workdir; slow: the small preset to >= 25 dB PSNR."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from vp_jax.checkpoint.manager import CheckpointError
from vp_jax.config import gin_cli
from vp_jax.models import registry
from vp_jax.models.magvit import preset, synthetic
from vp_jax.models.magvit.train import train_video_tokenizer, write_model_config
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

OPT = {"generator": OptimizerConfig(learning_rate=1e-3),
       "discriminator": OptimizerConfig(learning_rate=1e-4)}


def test_two_groups_and_discriminator_warmup(tmp_path):
  cfg = preset("tiny", disc_start_step=2)
  workdir = str(tmp_path / "run")
  write_model_config(workdir, cfg)
  trainer = Trainer(registry.factory(cfg),
                    TrainerConfig(train_steps=4, optimizers=OPT, progress=False, log_every=1,
                                  async_checkpointing=False),
                    make_mesh(MeshConfig(), jax.devices()[:2]), DEFAULT_RULES, workdir)
  assert trainer.spec.groups == {"generator": ("tokenizer",), "discriminator": ("discriminator",)}
  state = trainer.init_or_restore()
  data = synthetic.moving_shapes_iterator(2, 5, 16, 16)
  disc0 = jax.device_get(state.params["discriminator"])
  history = []
  for _ in range(4):
    tok_before = jax.device_get(state.params["tokenizer"])
    disc_before = jax.device_get(state.params["discriminator"])
    state, metrics = trainer.step(state, next(data))
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    tok_moved = any(np.any(a != b) for a, b in zip(
        jax.tree.leaves(tok_before), jax.tree.leaves(jax.device_get(state.params["tokenizer"]))))
    disc_moved = any(np.any(a != b) for a, b in zip(
        jax.tree.leaves(disc_before),
        jax.tree.leaves(jax.device_get(state.params["discriminator"]))))
    history.append((m, tok_moved, disc_moved))
  for i, (m, tok_moved, disc_moved) in enumerate(history):
    assert tok_moved
    assert m["discriminator/active"] == float(i >= 2)
    # Before the warm-up ends the discriminator loss is 0 and (with no gradient) Adam leaves it.
    assert disc_moved == (i >= 2)
    assert (m["discriminator/loss"] == 0.0) == (i < 2)
    for key in ("generator/psnr", "generator/codes_used", "generator/perplexity_0",
                "generator/codebook_entropy", "generator/per_sample_entropy"):
      assert np.isfinite(m[key])
  assert history[1][0]["generator/gan_g"] == 0.0 and history[2][0]["generator/gan_g"] != 0.0
  assert int(jax.device_get(state.rest["step"])) == 4
  # LeCAM EMAs move only while the discriminator is active (2 active steps).
  ema = float(jax.device_get(state.rest["ema_real"]))
  assert ema != 0.0
  assert any(np.any(a != b) for a, b in zip(
      jax.tree.leaves(disc0), jax.tree.leaves(jax.device_get(state.params["discriminator"]))))
  # Save through the shared Checkpointer; the API loads the tokenizer weights back.
  trainer.checkpointer.save(4, state, data.get_state())
  trainer.close()
  tok = VideoTokenizer.load(workdir)
  assert tok.config == cfg and tok.step == 4
  assert VideoTokenizer.load(f"{workdir}/checkpoints").step == 4
  clip = synthetic.moving_shapes_batch(5, 0, 2, 5, 16, 16)
  params = jax.device_get(state.params["tokenizer"])
  np.testing.assert_array_equal(np.asarray(tok.encode(clip)),
                                np.asarray(VideoTokenizer(cfg, params).encode(clip)))
  with pytest.raises(FileNotFoundError, match="magvit_config.json"):
    VideoTokenizer.load(str(tmp_path))
  with pytest.raises(CheckpointError, match="No committed checkpoint for step 3"):
    VideoTokenizer.load(workdir, step=3)
  empty = str(tmp_path / "untrained")
  write_model_config(empty, cfg)
  with pytest.raises(CheckpointError, match="untrained/checkpoints does not exist"):
    VideoTokenizer.load(empty)


def test_gin_entry_point_configures_training(tmp_path):
  """The gin file binds every argument of train_video_tokenizer (run for real by the slow test and
  by the inflation test)."""
  import gin
  flags = gin_cli.parse_flags(["--gin_file=models/magvit_small.gin", "--gin.MODEL_DIR='/tmp/x'",
                               "--gin.TRAIN_STEPS=7", "--gin.NUM_FRAMES=9"])
  gin_cli.configure(flags)
  from vp_jax.config import configurables
  macros = {k: gin_cli.query_macro(k) for k in ("BATCH_SIZE", "NUM_FRAMES", "RESOLUTION",
                                                  "MODEL_DIR", "TRAIN_STEPS")}
  assert macros == {"BATCH_SIZE": 8, "NUM_FRAMES": 9, "RESOLUTION": 64, "MODEL_DIR": "/tmp/x",
                    "TRAIN_STEPS": 7}
  for arg in ("batch_size", "num_frames", "height", "width", "model_dir", "model", "trainer"):
    gin.query_parameter(f"train_video_tokenizer.{arg}")      # raises if the gin file missed one
  optimizers = gin.query_parameter("vp_jax.TrainerConfig.optimizers")
  assert sorted(optimizers) == ["discriminator", "generator"]
  assert configurables.magvit_preset() == preset("small")
  gin.clear_config()
  with pytest.raises(SystemExit):
    gin_cli.run(lambda: None, ["--gin_file=models/magvit_small.gin"])  # MODEL_DIR is required


def held_out_psnr(tok, clips):
  recon = np.asarray(tok.decode(tok.encode(clips)))
  mse = np.mean((recon - clips / 255.0) ** 2, axis=(1, 2, 3, 4))
  return float(np.mean(10 * np.log10(1.0 / mse)))


# The measured recipe (docs/magvit.md "Recipe"): the image stage trains `small_image` on 64x64
# moving-shape frames at batch 8 (cosine to 10 % over its steps); the video stage trains the inflated
# `small` on VIDEO_FRAMES x 64x64 clips at batch VIDEO_BATCH.
IMAGE_STEPS, IMAGE_BATCH, IMAGE_WARMUP, IMAGE_LR = 2000, 8, 200, 1e-3
VIDEO_STEPS, VIDEO_FRAMES, VIDEO_BATCH, VIDEO_WARMUP, VIDEO_LR = 300, 9, 4, 50, 5e-4
PSNR_TARGET_DB = 25.0


def _recipe_trainer(steps, warmup_steps, learning_rate):
  opt = dict(warmup_steps=warmup_steps, end_learning_rate_ratio=0.1)
  return TrainerConfig(
      train_steps=steps, progress=True, log_every=50, save_every=steps,
      optimizers={"generator": OptimizerConfig(learning_rate=learning_rate, **opt),
                  "discriminator": OptimizerConfig(learning_rate=1e-4, **opt)})


@pytest.mark.slow
def test_small_preset_reaches_psnr_target(tmp_path):
  """The documented recipe (docs/magvit.md) through the real Trainer: image pretraining of
  `small_image` on 64x64 moving-shape frames, inflation, then video training of `small` on
  VIDEO_FRAMESx64x64 clips; PSNR on held-out 17x64x64 clips (another seed) in [0, 1] pixel units.
  MAGVIT_IMAGE_STEPS / MAGVIT_VIDEO_STEPS override the step counts."""
  image_steps = int(os.environ.get("MAGVIT_IMAGE_STEPS", str(IMAGE_STEPS)))
  video_steps = int(os.environ.get("MAGVIT_VIDEO_STEPS", str(VIDEO_STEPS)))
  image_dir, video_dir = str(tmp_path / "image"), str(tmp_path / "video")
  train_video_tokenizer(model_dir=image_dir, model=preset("small_image"),
                        trainer=_recipe_trainer(image_steps, IMAGE_WARMUP, IMAGE_LR),
                        batch_size=IMAGE_BATCH, num_frames=1, height=64, width=64)
  train_video_tokenizer(model_dir=video_dir, model=preset("small"),
                        trainer=_recipe_trainer(video_steps, VIDEO_WARMUP, VIDEO_LR),
                        batch_size=VIDEO_BATCH, num_frames=VIDEO_FRAMES, height=64, width=64,
                        init_from=image_dir)
  tok = VideoTokenizer.load(video_dir)
  clips = synthetic.moving_shapes_batch(12345, 0, 16, 17, 64, 64)
  value = held_out_psnr(tok, clips)
  ids = np.asarray(tok.encode(clips))
  print(f"held-out PSNR {value:.2f} dB; distinct codes {len(np.unique(ids))} of {ids.size}")
  assert value >= PSNR_TARGET_DB


@pytest.mark.slow
def test_image_pretraining_then_inflation_through_trainer(tmp_path):
  """train_video_tokenizer on images (tiny_image), then a video run with init_from: its step-0
  checkpoint holds the inflated image weights, and training continues from there."""
  opt = TrainerConfig(train_steps=1, optimizers=OPT, progress=False, async_checkpointing=False)
  image_dir, video_dir = str(tmp_path / "image"), str(tmp_path / "video")
  train_video_tokenizer(model_dir=image_dir, model=preset("tiny_image"), trainer=opt,
                        batch_size=8, num_frames=1, height=16, width=16)
  from vp_jax.models.magvit.inflation import inflate_params
  from vp_jax.models.magvit.train import restore_tokenizer_params
  image_params, _ = restore_tokenizer_params(image_dir)
  result = train_video_tokenizer(model_dir=video_dir, model=preset("tiny"), trainer=opt,
                                 batch_size=8, num_frames=5, height=16, width=16,
                                 init_from=image_dir)
  assert result.start_step == 0 and sorted(result.losses) == [1]
  step0, _ = restore_tokenizer_params(video_dir, step=0)
  expected = inflate_params(image_params, step0)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(step0)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="inflation starts from an image model"):
    train_video_tokenizer(model_dir=str(tmp_path / "v2"), model=preset("tiny"), trainer=opt,
                          batch_size=8, num_frames=5, height=16, width=16, init_from=video_dir)
