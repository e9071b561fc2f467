"""The trainable MAGVIT-v2 through the shared Trainer: two optimizer groups, discriminator warm-up,
LeCAM statistics, gin entry point, loading the workdir; slow: the small preset's measured recipe to
its stated held-out PSNR (PSNR_TARGET_DB)."""
import json
import os
import re

import jax
import numpy as np
import pytest

from vp_jax.checkpoint.manager import CheckpointError
from vp_jax.config import gin_cli
from vp_jax.models import registry
from vp_jax.models.magvit import preset, synthetic
from vp_jax.models.magvit.config import MagvitConfig
from vp_jax.models.magvit.evaluate import score_held_out
from vp_jax.models.magvit.train import (read_model_config, train_video_tokenizer,
                                       write_model_config)
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.tokenizers.cpu_compile import conv_operand_params
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

from tests.helpers import run_launcher

OPT = {"generator": OptimizerConfig(learning_rate=1e-3),
       "discriminator": OptimizerConfig(learning_rate=1e-4)}


def test_two_groups_and_discriminator_warmup(tmp_path):
  cfg = preset("tiny", disc_start_step=2)
  workdir = str(tmp_path / "run")
  write_model_config(workdir, cfg)
  trainer = Trainer(registry.factory(cfg),
                    TrainerConfig(train_steps=4, optimizers=OPT, progress=False, log_every=1,
                                  async_checkpointing=False, ema_decay={"generator": 0.9}),
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
  # The API loads the generator's moving average by default (the run kept one), the trained
  # weights on request; describe() records which.
  tok = VideoTokenizer.load(workdir)
  assert tok.config == cfg and tok.step == 4 and tok.describe()["weights"] == "ema"
  raw = VideoTokenizer.load(f"{workdir}/checkpoints", weights="params", cpu_convs="onednn_bf16")
  assert raw.step == 4 and raw.describe()["weights"] == "params"
  assert raw.cpu_convs == raw.describe()["cpu_convs"] == "onednn_bf16" and tok.cpu_convs == "onednn"
  # (the bfloat16-operand tokenizer holds its conv kernels rounded: cpu_compile.conv_operand_params)
  raw_want = conv_operand_params(state.params["tokenizer"], raw.mesh, "onednn_bf16")
  for loaded, want in ((tok, state.ema["tokenizer"]), (raw, raw_want)):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded._params),
                 jax.device_get(want))
  assert not np.allclose(tok._params["decoder"]["conv_out"]["kernel"],
                         raw._params["decoder"]["conv_out"]["kernel"])
  clip = synthetic.moving_shapes_batch(5, 0, 2, 5, 16, 16)
  np.testing.assert_array_equal(
      np.asarray(tok.encode(clip)),
      np.asarray(VideoTokenizer(cfg, jax.device_get(state.ema["tokenizer"])).encode(clip)))
  with pytest.raises(FileNotFoundError, match="magvit_config.json"):
    VideoTokenizer.load(str(tmp_path))
  with pytest.raises(CheckpointError, match="No committed checkpoint for step 3"):
    VideoTokenizer.load(workdir, step=3)
  empty = str(tmp_path / "untrained")
  write_model_config(empty, cfg)
  with pytest.raises(CheckpointError, match="untrained/checkpoints does not exist"):
    VideoTokenizer.load(empty)


def test_model_config_round_trip(tmp_path):
  cfg = preset("small", entropy_weight=0.0, disc_start_step=7)
  write_model_config(str(tmp_path / "run"), cfg)
  assert read_model_config(str(tmp_path / "run")) == cfg
  assert MagvitConfig.from_dict(json.loads(cfg.to_json())) == cfg
  paper = json.loads(preset("paper").to_json())        # nested PerceptualConfig, tuples in both
  assert MagvitConfig.from_dict(paper) == preset("paper")
  assert isinstance(MagvitConfig.from_dict(paper).perceptual.widths, tuple)
  with pytest.raises(FileNotFoundError, match="other/magvit_config.json not found"):
    read_model_config(str(tmp_path / "other"))
  path = str(tmp_path / "run" / "magvit_config.json")
  good = json.loads(cfg.to_json())
  for text, message in (
      ('{"filters": 32,', "not valid JSON"),                              # torn write
      ("[32]", "expected a JSON object of config fields, got list."),
      (json.dumps({**good, "filtres": 32}), "unknown MagvitConfig fields ['filtres']."),
      (json.dumps({**good, "temporal_subframe_init": "lerp"}),
       "not a valid MagvitConfig: MagvitConfig.temporal_subframe_init='lerp'"),
      (json.dumps({**good, "perceptual": [1]}), "not a valid MagvitConfig: ")):
    with open(path, "w") as f:
      f.write(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
      read_model_config(str(tmp_path / "run"))


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


@pytest.mark.parametrize("gin_file,expected", [
    ("magvit_small_image.gin", {"preset": "small_image", "BATCH_SIZE": 8, "NUM_FRAMES": 1,
                                "LEARNING_RATE": 1e-3, "WARMUP_STEPS": 200, "init_from": None,
                                "entropy_weight": 0.02, "disc_start_step": 1_000_000_000,
                                "temporal_subframe_init": "repeat", "commitment_weight": 0.25}),
    ("magvit_small_video.gin", {"preset": "small", "BATCH_SIZE": 2, "NUM_FRAMES": 17,
                                "LEARNING_RATE": 1e-4, "WARMUP_STEPS": 50, "init_from": "/tmp/i",
                                "entropy_weight": 0.0, "disc_start_step": 2000,
                                "temporal_subframe_init": "blend", "commitment_weight": 0.0}),
])
def test_recipe_gin_files(gin_file, expected):
  """The two stages of the documented recipe (the slow PSNR test runs them for real)."""
  import gin
  from vp_jax.config import configurables
  gin_cli.configure(gin_cli.parse_flags([f"--gin_file=models/{gin_file}", "--gin.MODEL_DIR='/tmp/x'",
                                         "--gin.TRAIN_STEPS=7", "--gin.INIT_FROM='/tmp/i'"]))
  try:
    got = {k: gin_cli.query_macro(k) for k in ("BATCH_SIZE", "NUM_FRAMES", "LEARNING_RATE",
                                                "WARMUP_STEPS")}
    got["preset"] = gin.query_parameter("vp_jax.magvit_preset.name")
    model = configurables.magvit_preset()
    got["entropy_weight"], got["disc_start_step"] = model.entropy_weight, model.disc_start_step
    got["temporal_subframe_init"] = model.temporal_subframe_init
    got["commitment_weight"] = model.commitment_weight
    try:
      gin.query_parameter("train_video_tokenizer.init_from")    # ValueError where not bound
      got["init_from"] = gin_cli.query_macro("INIT_FROM")
    except ValueError:
      got["init_from"] = None
    assert got == expected
    assert model == preset(expected["preset"], entropy_weight=expected["entropy_weight"],
                           disc_start_step=expected["disc_start_step"],
                           temporal_subframe_init=expected["temporal_subframe_init"],
                           commitment_weight=expected["commitment_weight"])
  finally:
    gin.clear_config()
  if expected["init_from"]:
    with pytest.raises(SystemExit):           # the image workdir is required
      gin_cli.run(lambda: None, [f"--gin_file=models/{gin_file}", "--gin.MODEL_DIR='/tmp/x'",
                                 "--gin.TRAIN_STEPS=7"])
    gin.clear_config()


# The measured recipe (docs/magvit.md "Recipe"): the two gin files, image stage then video stage.
# Measured on 2-core CPUs (docs/magvit.md "Status"), at 400 video steps: this test passed at
# 24.34 dB over the 128 held-out clips with the repeat sub-frame init (2026-12-01) and at 24.43 dB
# with the blend init (2026-12-02, stop 27; image stage 25.42 dB on 128 images, the same on both
# days; Intel Xeon host). Stop 28 dropped the video stage's commitment loss and went to 800 steps
# (the recipe since then): its video command from stop 27's image model read 24.94 dB on that
# host. Stop 29 ran this test's two commands from a clean checkout on an AMD EPYC host with
# AVX-512: 25.97 dB on images, 25.34 dB on clips (image stage 39 min, video stage 71 min); this
# test ran whole on that host kind in stop 31 and printed the same figures (passed, 130 min). Figures
# move by 0.3-0.6 dB between host CPU kinds (XLA compiles for each instruction set), and about as
# much between seeds: SEED=1 on the AMD host read 25.73 / 25.19 dB (stop 32). The bound,
# 24.5 dB, sits below both current readings by 0.44 dB or more and above the stop-27 recipe's
# 24.43, so a return to that recipe's quality fails it. The aim is 25 dB.
IMAGE_STEPS, VIDEO_STEPS = 5000, 800
PSNR_TARGET_DB = 24.5
# Scored on 128 held-out clips, 8 blocks of 16 (block 0 is the set the recipe was first measured
# on): 16-clip blocks of one model differ by up to ~1.5 dB, more than the recipe changes being
# compared, so the bound is on the mean over all 128 (vp_jax/models/magvit/evaluate.py).
HELD_OUT_BLOCKS = 8


def run_gin_training(argv):
  """launch/train_video_tokenizer.py with these flags, as its own job on the machine's real devices
  (the recipe was measured on one CPU device; the suite's 8 simulated devices could not split its
  batch of 2 clips)."""
  run_launcher("train_video_tokenizer.py", argv)


@pytest.mark.slow
def test_small_preset_reaches_psnr_target(tmp_path):
  """The documented recipe through the gin entry point and the real Trainer: image pretraining
  (models/magvit_small_image.gin: `small_image` on 64x64 moving-shape frames), inflation, video
  training (models/magvit_small_video.gin: `small` on 17x64x64 clips); mean PSNR over 128
  held-out 17x64x64 clips (another seed) in [0, 1] pixel units. MAGVIT_IMAGE_STEPS /
  MAGVIT_VIDEO_STEPS override the step counts (and MAGVIT_PSNR_TARGET the bound) for a quicker
  run of the same path."""
  image_steps = int(os.environ.get("MAGVIT_IMAGE_STEPS", str(IMAGE_STEPS)))
  video_steps = int(os.environ.get("MAGVIT_VIDEO_STEPS", str(VIDEO_STEPS)))
  target = float(os.environ.get("MAGVIT_PSNR_TARGET", str(PSNR_TARGET_DB)))
  image_dir, video_dir = str(tmp_path / "image"), str(tmp_path / "video")
  run_gin_training(["--gin_file=models/magvit_small_image.gin", f"--gin.MODEL_DIR='{image_dir}'",
                    f"--gin.TRAIN_STEPS={image_steps}"])
  run_gin_training(["--gin_file=models/magvit_small_video.gin", f"--gin.MODEL_DIR='{video_dir}'",
                    f"--gin.INIT_FROM='{image_dir}'", f"--gin.TRAIN_STEPS={video_steps}"])
  tok = VideoTokenizer.load(video_dir)
  assert tok.config == preset("small", entropy_weight=0.0, temporal_subframe_init="blend",
                              commitment_weight=0.0)
  assert tok.step == video_steps
  score = score_held_out(tok, blocks=HELD_OUT_BLOCKS)
  print(score.summary())
  assert score.psnr_db >= target


@pytest.mark.slow
def test_image_pretraining_then_inflation_through_trainer(tmp_path):
  """train_video_tokenizer on images (tiny_image), then a video run with init_from: its step-0
  checkpoint holds the inflated image weights, and training continues from there."""
  opt = TrainerConfig(train_steps=1, optimizers=OPT, progress=False, async_checkpointing=False)
  image_dir, video_dir = str(tmp_path / "image"), str(tmp_path / "video")
  train_video_tokenizer(model_dir=image_dir, model=preset("tiny_image"), trainer=opt,
                        batch_size=8, num_frames=1, height=16, width=16)
  from vp_jax.models.magvit.inflation import inflate_tokenizer
  from vp_jax.models.magvit.train import restore_tokenizer_params
  image_params, _, _ = restore_tokenizer_params(image_dir)
  result = train_video_tokenizer(model_dir=video_dir, model=preset("tiny"), trainer=opt,
                                 batch_size=8, num_frames=5, height=16, width=16,
                                 init_from=image_dir)
  assert result.start_step == 0 and sorted(result.losses) == [1]
  step0, _, _ = restore_tokenizer_params(video_dir, step=0)
  expected = inflate_tokenizer(image_params, step0, preset("tiny"))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(step0)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="inflation starts from an image model"):
    train_video_tokenizer(model_dir=str(tmp_path / "v2"), model=preset("tiny"), trainer=opt,
                          batch_size=8, num_frames=5, height=16, width=16, init_from=video_dir)
