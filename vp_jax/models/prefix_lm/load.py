"""Load a trained prefix LM for generation: the parameters of a `train_lm` checkpoint, sharded on a
mesh, without the optimizer state (or the optimizer config that shaped it).

The model is built abstractly (`nnx.eval_shape`), so loading allocates each parameter once, where
its logical axes put it under `rules`.
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
from flax import nnx

from vp_jax.checkpoint.manager import Checkpointer
from vp_jax.models.prefix_lm.config import PrefixLMConfig
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.parallel.rules import get_rules
from vp_jax.parallel.sharding import state_shardings


def load_prefix_lm(model_dir: str, cfg: PrefixLMConfig, mesh: jax.sharding.Mesh,
                   logical_axis_rules: str | Sequence = "default", step: int | None = None
                   ) -> tuple[PrefixLM, int]:
  """`model_dir` (a train_lm workdir, or its checkpoints/ directory) -> (PrefixLM with the weights
  of `step` (default: the latest committed one), that step). `cfg` must be the config it was
  trained with; a mismatch is a CheckpointError naming the parameter."""
  ckpt_dir = os.path.join(model_dir, "checkpoints")
  ckpt_dir = ckpt_dir if os.path.isdir(ckpt_dir) else model_dir
  rules = get_rules(logical_axis_rules)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: PrefixLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  parts = {"params": params, "rest": rest} if jax.tree.leaves(rest) else {"params": params}
  target = {name: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                               nnx.to_pure_dict(part), state_shardings(part, rules, mesh))
            for name, part in parts.items()}
  ckpt = Checkpointer(ckpt_dir, create=False, async_save=False)
  try:
    restored, step, _ = ckpt.restore_parts(target, step)
  finally:
    ckpt.close()
  for name, part in parts.items():
    nnx.replace_by_pure_dict(part, restored[name])
  return nnx.merge(graphdef, params, rest), step
