"""The LM train entry point (launch/train_lm.py + gin/videopoet_lm.gin): the tiny prefix LM trains
on a Table 2 mixture of tiny tokenized datasets through the shared Trainer with AGD batches, and a
second run resumes from the checkpoint with the iterator's saved position."""
import importlib.util
import os
import pathlib

import numpy as np
import pytest
from tasks_data import TEXT_DIM, tokenized


def _launcher():
  path = pathlib.Path(__file__).resolve().parents[1] / "launch" / "train_lm.py"
  spec = importlib.util.spec_from_file_location("launch_train_lm", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _argv(model_dir, steps, data):
  return ["--gin_file=videopoet_lm.gin", f"--gin.MODEL_DIR='{model_dir}'",
          "--gin.PREFIX_LM_PRESET='tiny'", f"--gin.vp_jax.prefix_lm_preset.text_dim={TEXT_DIM}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8",
          f"--gin.TOKENIZED_DATA={data!r}", "--gin.MIXTURE_OR_TASK_NAME='lm_t2v_i'",
          "--gin.train_lm.task_prefix='lm'", "--gin.LEARNING_RATE=1e-2",
          "--gin.WARMUP_STEPS=2", "--gin.vp_jax.TrainerConfig.save_every=3",
          "--gin.vp_jax.TrainerConfig.progress=False",
          "--gin.vp_jax.TrainerConfig.log_every=1"]


def _scalars(logdir, tag):
  import tensorflow as tf
  values = {}
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for v in event.summary.value:
        if v.tag == tag:
          values[event.step] = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") \
              else v.simple_value
  return [values[k] for k in sorted(values)]


def test_entry_point_trains_and_resumes(tmp_path, capsys):
  launch_train_lm = _launcher()
  data = tokenized()
  model_dir = tmp_path / "run"
  result = launch_train_lm.main(_argv(model_dir, 6, data))
  out = capsys.readouterr().out
  assert "mixture lm_t2v_i: registered" in out and "padding ratio 0.000" in out
  assert result.start_step == 0 and sorted(result.losses) == list(range(1, 7))
  losses = [result.losses[s] for s in range(1, 7)]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert "train_lm.tokenized_data" in (model_dir / "operative_config.gin").read_text()
  steps = sorted(os.listdir(model_dir / "checkpoints"))
  assert "6" in steps
  assert _scalars(model_dir / "tensorboard", "padding_ratio") == [0.0] * 6   # the model's metric
  assert "lm_img_text_to_image/86" in out and "lm_vid_text_to_video_128x128_17/152" in out
  # Resume to step 7: starts from the checkpoint at 6 with the data position restored.
  again = launch_train_lm.main(_argv(model_dir, 7, data))
  assert again.start_step == 6 and sorted(again.losses) == [7]


def test_wrong_vocabulary_is_refused(tmp_path):
  from vp_jax.train.run_lm import train_lm
  from vp_jax.models.prefix_lm.config import preset
  from vp_jax.sequence.vocab import PAPER
  from vp_jax.tasks.videopoet_mixtures import register_videopoet
  from vp_jax.train.trainer import TrainerConfig
  register_videopoet({"vid": tokenized()["vid"]}, vocab=PAPER, prefix="big", overwrite=True)
  with pytest.raises(ValueError, match="vocabulary of 266496, the model has 2304"):
    train_lm(model_dir=str(tmp_path), model=preset("tiny"), trainer=TrainerConfig(train_steps=1),
             mixture_or_task_name="big_t2v", batch_size=8)
