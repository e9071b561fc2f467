"""Slow: the small SoundStream preset trained through the shared Trainer (two optimizer groups) on
synthetic audio reaches a reconstruction target on held-out clips (another seed). Fast: the model
config file the trainer writes reads back as the same config; bad files are refused.

Run: .venv/bin/python -m pytest -q -m slow tests/test_soundstream_train.py
"""
import json
import os
import re

import jax
import numpy as np
import pytest

from vp_jax.models.soundstream import data, spectral
from vp_jax.models.soundstream.config import SoundStreamConfig, preset
from vp_jax.models.soundstream.model import init_model
from vp_jax.models.soundstream.train import (CONFIG_FILE, load_config, make_trainer,
                                             save_config)
from vp_jax.parallel.mesh import MeshConfig
from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import TrainerConfig

STEPS = 300
ADV_START = 240
BATCH, CLIP = 8, 5_120
# Mean held-out log-mel distance (mean |log10 mel| difference, 1024-point window, 64 mels) after
# STEPS steps must be below TARGET and below half of the untrained model's. Measured on the training
# batches of this run (shared 2-core machine, ~35 min): 1.20 at step 25, 0.71 at 100, 0.58-0.66 at
# 200-250, 0.615 at 275; an untrained model scores ~2.5 on the held-out clips. A complete run
# (quiet 2-core machine, 11 min): held-out 0.670, untrained 2.485, SNR -0.45 dB.
TARGET = 1.0


def _heldout_distance(tok, clips):
  recon = tok.decode(tok.encode(clips))
  n = recon.shape[1]
  return float(np.mean(np.asarray(spectral.log_mel_distance(clips[:, :n], recon)))), \
      float(np.mean(np.asarray(spectral.snr_db(clips[:, :n], recon))))


@pytest.mark.slow
def test_small_preset_reaches_reconstruction_target(tmp_path):
  cfg = preset("small", adversarial_start_step=ADV_START)
  workdir = str(tmp_path / "run")
  save_config(workdir, cfg)
  gen = OptimizerConfig(learning_rate=1e-3, schedule="constant", warmup_steps=20, b1=0.5, b2=0.9)
  disc = OptimizerConfig(learning_rate=1e-4, schedule="constant", warmup_steps=20, b1=0.5, b2=0.9)
  trainer = make_trainer(cfg, TrainerConfig(
      train_steps=STEPS, optimizers={"generator": gen, "discriminator": disc}, log_every=25,
      save_every=STEPS, progress=True), MeshConfig(), model_dir=workdir,
      devices=jax.devices()[:1])
  result = trainer.fit(data.synthetic_batches(BATCH, CLIP, seed=0))
  trainer.close()
  assert int(result.state.nonfinite_total) == 0
  clips = data.synthetic_batch(data.HELDOUT_SEED, 0, 32, 34_000)
  trained, snr = _heldout_distance(AudioTokenizer.load(workdir), clips)
  untrained, _ = _heldout_distance(AudioTokenizer.from_model(init_model(cfg)), clips)
  print(f"held-out log-mel distance {trained:.3f} (untrained {untrained:.3f}), SNR {snr:.2f} dB")
  assert trained < TARGET, (trained, untrained, snr)
  assert trained < 0.5 * untrained, (trained, untrained)


def test_load_config_reads_back_what_the_trainer_writes(tmp_path):
  cfg = preset("small", adversarial_start_step=7, quantizer_dropout=0.5, strides=(2, 4, 5, 4))
  path = save_config(str(tmp_path / "run"), cfg)
  assert path == os.path.join(tmp_path, "run", CONFIG_FILE)
  with open(path) as f:
    raw = json.load(f)
  assert raw["strides"] == [2, 4, 5, 4] and raw["channels"] == 8 and raw["feature_weight"] == 100.0
  loaded = load_config(path)
  assert loaded == cfg and isinstance(loaded.strides, tuple) and loaded.hop_length == 160
  assert loaded.stft_disc_ffts == (512, 256, 128) and loaded.quantizer_dropout == 0.5
  assert load_config(save_config(str(tmp_path / "paper"), preset("paper"))) == SoundStreamConfig()
  # Fields the file leaves out take their defaults.
  (tmp_path / "partial.json").write_text('{"channels": 16, "num_levels": 2}')
  assert load_config(str(tmp_path / "partial.json")) == SoundStreamConfig(channels=16, num_levels=2)


def test_load_config_refuses_unknown_fields_invalid_values_and_bad_files(tmp_path):
  path = str(tmp_path / CONFIG_FILE)
  with open(path, "w") as f:
    json.dump({"channels": 8, "chanels": 8, "hop": 320}, f)
  with pytest.raises(ValueError, match=re.escape(f"{path}: unknown SoundStreamConfig fields "
                                                 "['chanels', 'hop']")):
    load_config(path)
  with open(path, "w") as f:
    json.dump({"strides": [2, 4], "channel_mults": [2, 4, 8]}, f)
  with pytest.raises(ValueError, match=re.escape(f"{path}: not a valid SoundStreamConfig: ") +
                     ".*2 strides but 3 channel_mults"):
    load_config(path)
  missing = str(tmp_path / "nowhere" / CONFIG_FILE)
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    load_config(missing)
  with open(path, "w") as f:
    f.write('{"channels": 8,')                 # torn write
  with pytest.raises(ValueError, match=re.escape(f"{path}: not valid JSON")):
    load_config(path)
  for text, kind in (("5", "int"), ('"abc"', "str"), ("[1]", "list")):
    with open(path, "w") as f:
      f.write(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected a JSON object of config "
                                                   f"fields, got {kind}.")):
      load_config(path)
