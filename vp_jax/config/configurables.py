"""Everything gin may configure, registered in one place (gin stays out of library modules).

Importing this module makes the names below usable in .gin files and `--gin.X=` flags.
"""
import dataclasses

import gin

from vp_jax.models import toy_lm
from vp_jax.models.soundstream import config as soundstream_config
from vp_jax.models.soundstream import train as soundstream_train
from vp_jax.parallel.mesh import MeshConfig
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.run import train as _train
from vp_jax.train.trainer import TrainerConfig

for _cls in (MeshConfig, OptimizerConfig, TrainerConfig, toy_lm.ToyLMConfig,
             soundstream_config.SoundStreamConfig):
  gin.external_configurable(_cls, module="vp_jax")


@gin.configurable(module="vp_jax")
def toy_lm_preset(name: str = "tiny", **overrides) -> toy_lm.ToyLMConfig:
  """A named ToyLMConfig preset with field overrides."""
  if name not in toy_lm.PRESETS:
    raise ValueError(f"toy_lm_preset: unknown preset {name!r}; known: {sorted(toy_lm.PRESETS)}.")
  return dataclasses.replace(toy_lm.PRESETS[name], **overrides)


@gin.configurable(module="vp_jax")
def soundstream_preset(name: str = "small", **overrides) -> soundstream_config.SoundStreamConfig:
  """A named SoundStreamConfig preset ("paper", "small") with field overrides."""
  return soundstream_config.preset(name, **overrides)


train = gin.external_configurable(_train, name="train")
train_soundstream = gin.external_configurable(soundstream_train.train, name="train_soundstream")
