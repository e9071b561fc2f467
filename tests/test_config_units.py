"""gin-facing config helpers, one at a time: `toy_lm_preset` and `demo_preset` (the presets' values,
overrides, validation and unknown names, called directly and through gin bindings) and
`write_config` (config.gin holds every binding, operative_config.gin only what was called, with
defaults; nothing is written off process 0)."""
import dataclasses
import os

import gin
import jax
import pytest

from vp_jax.config import configurables, gin_cli
from vp_jax.demo.config import DEMO_MIXTURE, DemoConfig
from vp_jax.models.magvit import config as magvit_config
from vp_jax.models.toy_lm import ToyLMConfig


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


# -- toy_lm_preset -------------------------------------------------------------------------------
def test_toy_lm_presets_values():
  tiny = configurables.toy_lm_preset()
  assert tiny == ToyLMConfig()
  assert (tiny.vocab_size, tiny.max_len, tiny.num_layers, tiny.embed_dim, tiny.num_heads,
          tiny.mlp_dim, tiny.head_dim) == (256, 64, 2, 64, 4, 256, 16)
  bench = configurables.toy_lm_preset("bench")
  assert (bench.vocab_size, bench.max_len, bench.num_layers, bench.embed_dim, bench.num_heads,
          bench.mlp_dim, bench.head_dim) == (1024, 256, 4, 512, 8, 2048, 64)
  assert (bench.dtype, bench.remat_policy, bench.dropout) == ("float32", "none", 0.0)


def test_toy_lm_preset_overrides_change_only_those_fields():
  cfg = configurables.toy_lm_preset("bench", num_layers=7, remat_policy="full")
  assert cfg.num_layers == 7 and cfg.remat_policy == "full"
  assert dataclasses.replace(cfg, num_layers=4, remat_policy="none") == \
      configurables.toy_lm_preset("bench")
  assert configurables.toy_lm_preset("bench").num_layers == 4      # the preset is unchanged
  with pytest.raises(TypeError, match="num_layer"):
    configurables.toy_lm_preset("tiny", num_layer=3)


def test_toy_lm_preset_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError) as e:
    configurables.toy_lm_preset("huge")
  # (gin adds a line naming the configurable)
  assert str(e.value).splitlines()[0] == ("toy_lm_preset: unknown preset 'huge'; known: "
                                          "['bench', 'tiny'].")


def test_toy_lm_preset_through_gin():
  gin.parse_config(["vp_jax.toy_lm_preset.name = 'bench'", "vp_jax.toy_lm_preset.embed_dim = 96"])
  cfg = configurables.toy_lm_preset()
  assert (cfg.vocab_size, cfg.embed_dim, cfg.num_heads, cfg.head_dim) == (1024, 96, 8, 12)


# -- demo_preset ---------------------------------------------------------------------------------
def test_demo_presets_values():
  cpu = configurables.demo_preset()
  assert cpu == DemoConfig()
  assert (cpu.image_steps, cpu.video_steps, cpu.audio_steps, cpu.lm_steps) == (3000, 150, 200, 400)
  assert cpu.video_tokenizer.recon_weight == 10.0 and cpu.video_tokenizer.filters == 8
  assert (cpu.image_lr, cpu.video_lr, cpu.audio_lr, cpu.lm_lr) == (2e-3, 5e-4, 2e-3, 2e-3)
  assert cpu.videos.num_examples == 256 and cpu.videos.num_frames == 17
  assert cpu.video_tokenizer.embedding_dim == 10 and cpu.lm.vocab.visual_codes == 1024
  assert cpu.audio_tokenizer.codebook_size == 256
  assert cpu.mixture == DEMO_MIXTURE and sum(r for _, r in cpu.mixture) == pytest.approx(1.0)
  test = configurables.demo_preset("test")
  assert (test.image_steps, test.video_steps, test.audio_steps, test.lm_steps) == (2, 2, 2, 3)
  assert (test.image_batch, test.video_batch, test.audio_batch, test.lm_batch) == (8, 8, 8, 8)
  assert (test.videos.num_examples, test.images.num_examples, test.images.num_frames) == (16, 8, 1)
  assert (test.num_samples, test.quality_samples, test.eval_clips, test.display_scale) == (
      1, 2, 2, 1)
  assert test.audio_clip_samples == 3200 and test.audio_tokenizer.channels == 4


def test_demo_preset_overrides_and_validation():
  cfg = configurables.demo_preset("test", lm_steps=9, seed=4)
  assert (cfg.lm_steps, cfg.seed, cfg.image_steps) == (9, 4, 2)
  with pytest.raises(ValueError, match=r"DemoConfig.image_steps=0 must be >= 1"):
    configurables.demo_preset("test", image_steps=0)
  bigger = magvit_config.preset("tiny", embedding_dim=12, gan_weight=0.0)
  with pytest.raises(ValueError, match=r"2\^12 codes, the LM vocabulary 1024"):
    configurables.demo_preset("cpu", video_tokenizer=bigger)
  with pytest.raises(ValueError) as e:
    configurables.demo_preset("gpu")
  assert str(e.value).splitlines()[0] == "Unknown demo preset 'gpu'; known: ['cpu', 'test']."


def test_demo_preset_through_gin():
  gin.parse_config(["vp_jax.demo_preset.name = 'test'", "vp_jax.demo_preset.lm_steps = 11"])
  cfg = configurables.demo_preset()
  assert (cfg.lm_steps, cfg.image_steps, cfg.num_samples) == (11, 2, 1)


# -- write_config --------------------------------------------------------------------------------
@gin.configurable(module="units_cfg")
def _used(a=1, b=2):
  return a + b


@gin.configurable(module="units_cfg")
def _unused(c=3):
  return c


def test_write_config_full_and_operative(tmp_path):
  gin.parse_config(["units_cfg._used.a = 10", "units_cfg._unused.c = 7"])
  model_dir = str(tmp_path / "new" / "model")
  gin_cli.write_config(model_dir, operative=False)          # creates the directory
  assert os.listdir(model_dir) == ["config.gin"]
  full = (tmp_path / "new" / "model" / "config.gin").read_text()
  assert "_used.a = 10" in full and "_unused.c = 7" in full and "_used.b" not in full
  assert _used() == 12
  gin_cli.write_config(model_dir, operative=True)
  assert sorted(os.listdir(model_dir)) == ["config.gin", "operative_config.gin"]
  operative = (tmp_path / "new" / "model" / "operative_config.gin").read_text()
  # Only what ran, and with the defaults it used.
  assert "_used.a = 10" in operative and "_used.b = 2" in operative
  assert "_unused" not in operative
  # Written again: the file is replaced, not appended to.
  gin.clear_config()
  gin.parse_config(["units_cfg._unused.c = 8"])
  gin_cli.write_config(model_dir, operative=False)
  full = (tmp_path / "new" / "model" / "config.gin").read_text()
  assert "_unused.c = 8" in full and "_used.a" not in full and "c = 7" not in full


def test_write_config_only_on_process_zero(tmp_path, monkeypatch):
  gin.parse_config(["units_cfg._used.a = 5"])
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  gin_cli.write_config(str(tmp_path / "m"), operative=False)
  gin_cli.write_config(str(tmp_path / "m"), operative=True)
  assert not (tmp_path / "m").exists()
