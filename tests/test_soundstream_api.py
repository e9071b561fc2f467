"""The audio tokenizer API: shapes (34,000 samples -> [B, 4, 106] -> 424 tokens), level-major
flattening, bad input, wav in/out, and loading a workdir written by the gin entry point."""
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
from flax import nnx

from vp_jax.checkpoint.manager import CheckpointError
from vp_jax.io import audio as audio_io
from vp_jax.models.soundstream.config import preset
from vp_jax.models.soundstream.model import SoundStream, init_model
from vp_jax.models.soundstream.train import make_trainer, save_config
from vp_jax.parallel.mesh import MeshConfig
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import TrainerConfig
from vp_jax.tokenizers.audio_tokenizer import (AudioError, AudioTokenizer, flatten_level_major,
                                               unflatten_level_major)


@pytest.fixture(autouse=True)
def _lazy_sharding():
  """Modules built outside a mesh: no eager sharding of the annotated parameters."""
  with nnx.use_eager_sharding(False):
    yield


ROOT = pathlib.Path(__file__).resolve().parents[1]
# A codec small enough for a 2-step GAN training run in a unit test.
TINY_OVERRIDES = dict(channels=4, embed_dim=16, stft_disc_ffts=(256,), stft_disc_channels=4,
                      stft_disc_layers=2, wave_disc_scales=1, wave_disc_channels=4,
                      wave_disc_layers=2, mel_windows=(256, 1024), kmeans_iters=2)


@pytest.fixture(scope="module")
def tok():
  return AudioTokenizer.from_model(init_model(preset("small")))


def _clip(n=34_000, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 16_000
  return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=n)).astype(np.float32)


def test_flatten_level_major_round_trip_and_order():
  ids = np.arange(2 * 4 * 106).reshape(2, 4, 106)
  flat = flatten_level_major(ids)
  assert flat.shape == (2, 424)
  np.testing.assert_array_equal(flat[:, :106], ids[:, 0])       # whole clip at level 0 first
  np.testing.assert_array_equal(flat[:, 106:212], ids[:, 1])
  np.testing.assert_array_equal(unflatten_level_major(flat), ids)
  np.testing.assert_array_equal(unflatten_level_major(jnp.asarray(flat), levels=4), ids)
  with pytest.raises(ValueError, match="multiple of levels"):
    unflatten_level_major(np.zeros(423))
  with pytest.raises(ValueError, match="levels, T"):
    flatten_level_major(np.zeros(5))


def test_encode_decode_shapes(tok):
  assert tok.num_frames(34_000) == 106
  wave = np.stack([_clip(seed=0), _clip(seed=1), np.zeros(34_000, np.float32)])
  ids = tok.encode(wave)
  assert ids.shape == (3, 4, 106) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < 1024
  assert flatten_level_major(ids).shape == (3, 424)
  np.testing.assert_array_equal(tok.encode(wave[0]), ids[:1])   # [N] is a batch of one
  out = tok.decode(ids)
  assert out.shape == (3, 33_920) and out.dtype == np.float32
  assert np.abs(out).max() <= 1.0
  assert tok.decode(ids, num_samples=34_000).shape == (3, 34_000)
  assert tok.decode(ids[:, :2]).shape == (3, 33_920)              # coarser bitrate: 2 levels


def test_bad_input_is_named(tok):
  with pytest.raises(AudioError, match="to_mono"):
    tok.encode(np.zeros((1, 34_000, 2), np.float32))                # stereo
  with pytest.raises(AudioError, match="empty"):
    tok.encode(np.zeros((1, 0), np.float32))
  with pytest.raises(AudioError, match="shorter than one frame"):
    tok.encode(np.zeros(300, np.float32))
  bad = np.stack([_clip(3200), _clip(3200)])
  bad[1, 7] = np.nan
  with pytest.raises(AudioError, match=r"rows \[1\].*NaN"):
    tok.encode(bad, name="batch")
  with pytest.raises(AudioError, match="int16"):
    tok.encode(np.zeros(3200, np.int16))
  with pytest.raises(AudioError, match="peak is 2.000"):
    tok.encode(2.0 * np.ones(3200, np.float32))
  with pytest.raises(ValueError, match="ids must be integers in"):
    tok.decode(np.full((1, 4, 3), 1024))
  with pytest.raises(ValueError, match="levels<=4"):
    tok.decode(np.zeros((1, 5, 3), np.int32))


def test_silence_and_other_sample_rates_are_handled(tok):
  silent = tok.encode(np.zeros((1, 6400), np.float32))
  assert silent.shape == (1, 4, 20)
  assert np.all(silent == silent[:, :, -1:])       # steady state: one code per level after warm-up
  # 2.125 s at 48 kHz is resampled to 34,000 samples -> 106 frames.
  ids48 = tok.encode(_clip(102_000), sample_rate=48_000)
  assert ids48.shape == (1, 4, 106)


def test_wav_files_in_and_out(tok, tmp_path):
  path = tmp_path / "stereo44k.wav"
  t = np.arange(int(2.125 * 44_100)) / 44_100
  tone = 0.5 * np.sin(2 * np.pi * 330 * t)
  soundfile.write(path, np.stack([tone, tone], 1), 44_100)
  ids = tok.encode_file(str(path))
  assert ids.shape == (1, 4, 106)
  np.testing.assert_array_equal(ids, tok.encode(audio_io.read_audio(str(path))))
  out = tok.decode_to_file(ids, str(tmp_path / "out.wav"), num_samples=34_000)
  back = audio_io.read_audio(out)
  assert back.shape == (34_000,)


def _run_launcher(argv):
  spec = importlib.util.spec_from_file_location("train_audio_tokenizer",
                                                ROOT / "launch" / "train_audio_tokenizer.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main(argv)


def _direct_encode(cfg, state, wave):
  """Codes from a train state's params/variables merged into the model directly."""
  model = nnx.eval_shape(lambda: SoundStream(cfg, rngs=nnx.Rngs(0)))
  graphdef, params_t, rest_t = nnx.split(model, nnx.Param, ...)
  nnx.replace_by_pure_dict(params_t, jax.device_get(state.params))
  nnx.replace_by_pure_dict(rest_t, jax.device_get(state.rest))
  return np.asarray(nnx.merge(graphdef, params_t, rest_t).encode(jnp.asarray(wave)[None]))


def test_tokenizer_loads_a_trainer_checkpoint(tmp_path):
  """A workdir written by the shared Trainer (its sharded init and Checkpointer; no train step,
  whose compile is the slow test's job) loads back: the same codes as the state itself."""
  cfg = preset("small", **TINY_OVERRIDES)
  workdir = str(tmp_path / "ss")
  save_config(workdir, cfg)
  opt = OptimizerConfig(learning_rate=1e-3)
  trainer = make_trainer(cfg, TrainerConfig(train_steps=1, progress=False, optimizers={
      "generator": opt, "discriminator": opt}), MeshConfig(), model_dir=workdir,
      devices=jax.devices()[:1])
  state = trainer.init_or_restore()
  trainer.checkpointer.save(7, state, {"index": 0})
  trainer.close()
  tok = AudioTokenizer.load(workdir)
  assert tok.config == cfg
  wave = _clip(6400)
  ids = tok.encode(wave)
  assert ids.shape == (1, 4, 20)
  np.testing.assert_array_equal(ids, _direct_encode(cfg, state, wave))
  np.testing.assert_array_equal(
      AudioTokenizer.load(os.path.join(workdir, "checkpoints"), step=7).encode(wave), ids)
  assert tok.decode(ids).shape == (1, 6400)
  with pytest.raises(CheckpointError, match="soundstream_config.json"):
    AudioTokenizer.load(str(tmp_path))
  with pytest.raises(CheckpointError, match="No committed checkpoint for step 8"):
    AudioTokenizer.load(workdir, step=8)


@pytest.mark.slow
def test_gin_entry_point_trains_and_tokenizer_loads_the_workdir(tmp_path):
  """launch/train_audio_tokenizer.py with models/soundstream_small.gin (tiny overrides), 2 GAN
  steps through the shared Trainer on 8 devices, then AudioTokenizer.load(workdir). ~2-5 min of
  XLA:CPU compile for the two-group train step."""
  workdir = str(tmp_path / "ss")
  overrides = [f"--gin.vp_jax.soundstream_preset.{k}={v!r}" for k, v in TINY_OVERRIDES.items()]
  result = _run_launcher(["--gin_file=models/soundstream_small.gin",
                          f"--gin.MODEL_DIR='{workdir}'", "--gin.TRAIN_STEPS=2",
                          "--gin.BATCH_SIZE=8", "--gin.CLIP_SAMPLES=1280", "--gin.ADV_START=1",
                          *overrides])
  assert sorted(result.losses) == [1, 2]
  assert all(np.isfinite(v) for v in result.losses.values())
  assert os.path.exists(os.path.join(workdir, "operative_config.gin"))
  state = result.state
  assert int(state.rest["quantizer"]["initialized"]) == 1    # k-means init ran in step 1
  assert int(state.rest["generator_steps"]) == 2
  tok = AudioTokenizer.load(workdir)
  assert tok.config == preset("small", adversarial_start_step=1, **TINY_OVERRIDES)
  np.testing.assert_array_equal(np.asarray(tok._state["rest"]["quantizer"]["codebook"]),
                                np.asarray(state.rest["quantizer"]["codebook"]))
  wave = _clip(6400)
  np.testing.assert_array_equal(tok.encode(wave), _direct_encode(tok.config, state, wave))
