"""Everything gin may configure, registered in one place (gin stays out of library modules).

Importing this module makes the names below usable in .gin files and `--gin.X=` flags.
"""
import dataclasses

import gin

from vp_jax.demo import config as demo_config
from vp_jax.demo.run import run_demo as _run_demo
from vp_jax.generate.sampling import SamplingConfig
from vp_jax.models import magvit, toy_lm
from vp_jax.models.magvit.train import train_video_tokenizer as _train_video_tokenizer
from vp_jax.models.prefix_lm import config as prefix_lm_config
from vp_jax.models.soundstream import config as soundstream_config
from vp_jax.models.soundstream import train as soundstream_train
from vp_jax.parallel.mesh import MeshConfig
from vp_jax.sequence.vocab import Vocabulary
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.run import train as _train
from vp_jax.train.run_lm import train_lm as _train_lm
from vp_jax.train.trainer import TrainerConfig

for _cls in (MeshConfig, OptimizerConfig, TrainerConfig, toy_lm.ToyLMConfig,
             prefix_lm_config.PrefixLMConfig, Vocabulary, SamplingConfig, magvit.MagvitConfig,
             magvit.PerceptualConfig, soundstream_config.SoundStreamConfig):
  gin.external_configurable(_cls, module="vp_jax")


@gin.configurable(module="vp_jax")
def toy_lm_preset(name: str = "tiny", **overrides) -> toy_lm.ToyLMConfig:
  """A named ToyLMConfig preset with field overrides."""
  if name not in toy_lm.PRESETS:
    raise ValueError(f"toy_lm_preset: unknown preset {name!r}; known: {sorted(toy_lm.PRESETS)}.")
  return dataclasses.replace(toy_lm.PRESETS[name], **overrides)


@gin.configurable(module="vp_jax")
def prefix_lm_preset(name: str = "cpu", **overrides) -> prefix_lm_config.PrefixLMConfig:
  """A named PrefixLMConfig preset (tiny, cpu, bench, 300m, 1b, 8b) with field overrides."""
  return prefix_lm_config.preset(name, **overrides)


@gin.configurable(module="vp_jax")
def magvit_preset(name: str = "small", **overrides) -> magvit.MagvitConfig:
  """A named MagvitConfig preset (vp_jax/models/magvit/config.py) with field overrides."""
  return magvit.preset(name, **overrides)


@gin.configurable(module="vp_jax")
def soundstream_preset(name: str = "small", **overrides) -> soundstream_config.SoundStreamConfig:
  """A named SoundStreamConfig preset ("paper", "small") with field overrides."""
  return soundstream_config.preset(name, **overrides)


@gin.configurable(module="vp_jax")
def demo_preset(name: str = "cpu", **overrides) -> demo_config.DemoConfig:
  """A named DemoConfig preset ("cpu", "test") with field overrides."""
  return demo_config.preset(name, **overrides)


train = gin.external_configurable(_train, name="train")
run_demo = gin.external_configurable(_run_demo, name="run_demo")
train_lm = gin.external_configurable(_train_lm, name="train_lm")
train_video_tokenizer = gin.external_configurable(_train_video_tokenizer,
                                                  name="train_video_tokenizer")
train_soundstream = gin.external_configurable(soundstream_train.train, name="train_soundstream")
