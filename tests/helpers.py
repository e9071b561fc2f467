"""Small builders shared by the tests: a tiny LM trainer over a chosen device subset."""
from __future__ import annotations

import jax

from vp_jax.data.iterators import synthetic_lm_batches
from vp_jax.models.toy_lm import ToyLM, ToyLMConfig
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

TINY = ToyLMConfig(vocab_size=64, max_len=16, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
                   dropout=0.1)


def tiny_trainer(workdir=None, *, devices=1, mesh=MeshConfig(), model=TINY, rules=DEFAULT_RULES,
                 **overrides) -> Trainer:
  defaults = dict(train_steps=12, save_every=4, log_every=1, progress=False,
                  optimizers={"model": OptimizerConfig(learning_rate=3e-3, warmup_steps=2)})
  defaults.update(overrides)
  config = TrainerConfig(**defaults)
  return Trainer(lambda rngs: ToyLM(model, rngs=rngs), config,
                 make_mesh(mesh, jax.devices()[:devices]), rules, workdir)


def tiny_batches(batch_size=8, seq_len=16, seed=0):
  return synthetic_lm_batches(batch_size, seq_len, TINY.vocab_size, seed=seed)
