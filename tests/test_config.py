"""gin entry point: flags, typos and missing required values fail early and name the problem."""
import os
import subprocess
import sys

import gin
import pytest

from vp_jax.config import gin_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_flags_t5x_style():
  flags = gin_cli.parse_flags(["--gin_file=a.gin", "--gin_file", "b.gin", "--gin.TRAIN_STEPS=5",
                               "--gin_search_paths=x,y", "--other"])
  assert flags.files == ("a.gin", "b.gin")
  assert flags.bindings == ("TRAIN_STEPS = 5",)
  assert flags.search_paths == ("x", "y") and flags.rest == ("--other",)
  with pytest.raises(gin_cli.ConfigError, match="expected --gin.NAME=VALUE"):
    gin_cli.parse_flags(["--gin.TRAIN_STEPS"])


def _configure(*bindings, files=("toy_lm_cpu.gin",)):
  gin_cli.configure(gin_cli.GinFlags(files=files, bindings=bindings))


def test_toy_config_resolves_macros():
  _configure("MODEL_DIR = '/tmp/x'", "TRAIN_STEPS = 7")
  assert gin_cli.query_macro("MODEL_DIR") == "/tmp/x"
  assert gin_cli.query_macro("TRAIN_STEPS") == 7 and gin_cli.query_macro("BATCH_SIZE") == 16
  assert gin_cli.query_macro("TASK_FEATURE_LENGTHS") == {"targets": 64}
  gin.clear_config()


def test_prefix_lm_gin_file_builds_the_named_preset_with_overrides():
  from vp_jax.config import configurables
  _configure("PREFIX_LM_PRESET = '1b'", "vp_jax.prefix_lm_preset.z_loss = 1e-4",
             files=("models/prefix_lm.gin",))
  with gin.config_scope(None):
    cfg = configurables.prefix_lm_preset()
  assert cfg.embed_dim == 1536 and cfg.num_layers == 20 and cfg.z_loss == 1e-4
  gin.clear_config()
  with pytest.raises(ValueError, match="Unknown PrefixLM preset '2b'"):
    configurables.prefix_lm_preset("2b")


@pytest.mark.parametrize("binding,match", [
    ("vp_jax.TrainerConfig.trian_steps = 3", "trian_steps"),
    ("vp_jax.TrainConfig.train_steps = 3", "vp_jax.TrainConfig"),
    ("TRAIN_STEPS = (", "TRAIN_STEPS"),
])
def test_typos_fail_at_parse_time_naming_the_binding(binding, match):
  with pytest.raises(gin_cli.ConfigError, match=match):
    _configure("MODEL_DIR = '/tmp/x'", binding)
  gin.clear_config()


def test_missing_required_macro_is_named():
  with pytest.raises(gin_cli.ConfigError, match="MODEL_DIR"):
    _configure("TRAIN_STEPS = 3")
  gin.clear_config()


def test_missing_gin_file_is_named():
  with pytest.raises(gin_cli.ConfigError, match="--gin_file=nope.gin: file not found"):
    _configure(files=("nope.gin",))


def test_include_through_search_path_logs_no_errors(caplog):
  """gin logs `ERROR Path not found` for each search path an include is not under before the one
  that has it; configure drops those (and only while parsing)."""
  import logging
  with caplog.at_level(logging.INFO):
    gin_cli.configure(gin_cli.GinFlags(files=("models/magvit_small_image.gin",),
                                       bindings=("MODEL_DIR = '/tmp/x'", "TRAIN_STEPS = 3")))
    assert gin_cli.query_macro("NUM_FRAMES") == 1          # the file and its include were read
    assert gin_cli.query_macro("RESOLUTION") == 64         # (set only in the include)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    logging.error("Path not found: after configure")
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
      "Path not found: after configure"]
  gin.clear_config()


def test_missing_include_is_named(tmp_path):
  (tmp_path / "top.gin").write_text("include 'models/nope_missing.gin'\n")
  with pytest.raises(gin_cli.ConfigError, match=r"(?s)Unable to open file: models/nope_missing"
                                                r"\.gin.*top\.gin"):
    _configure(files=(str(tmp_path / "top.gin"),))
  gin.clear_config()


def _train(*args, timeout=600):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                                   "--xla_backend_optimization_level=0")   # as conftest's
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "train.py"), *args],
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_train_entry_point_end_to_end(tmp_path):
  out = _train("--gin_file=toy_lm_cpu.gin", f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=6",
               "--gin.vp_jax.TrainerConfig.eval_every=3", "--gin.vp_jax.TrainerConfig.save_every=3",
               "--gin.TASK_FEATURE_LENGTHS={'targets': 16}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "steps 0 -> 6" in out.stdout and "2 device(s)" in out.stdout
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  operative = (tmp_path / "operative_config.gin").read_text()
  assert "train_steps = %TRAIN_STEPS" in operative or "train_steps = 6" in operative
  assert "TRAIN_STEPS = 6" in (tmp_path / "config.gin").read_text()
  # a second run with more steps resumes from step 6
  again = _train("--gin_file=toy_lm_cpu.gin", f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=8",
                 "--gin.TASK_FEATURE_LENGTHS={'targets': 16}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "steps 6 -> 8" in again.stdout


def test_train_entry_point_bad_config_exits_2_before_compute(tmp_path):
  out = _train("--gin_file=toy_lm_cpu.gin", "--gin.vp_jax.TrainerConfig.lerning_rate=1")
  assert out.returncode == 2
  assert "lerning_rate" in out.stderr and "Traceback" not in out.stderr
  out = _train("--gin_file=toy_lm_cpu.gin", "--gin.TRAIN_STEPS=3")
  assert out.returncode == 2 and "MODEL_DIR" in out.stderr
