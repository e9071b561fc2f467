"""Optimizer and learning-rate schedule from a frozen config (optax).

AdamW with decoupled weight decay, linear warmup followed by cosine, rsqrt or constant decay, and
global-norm gradient clipping. A model with several parameter groups (a GAN's generator and
discriminator) gets one of these per group. An optional `UpdateScale` gives some parameters (or
some slices of one) a learning rate of their own, as the MAGVIT video stage can for the temporal
kernel taps that inflation starts at zero (`temporal_tap_lr_multiplier`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("constant", "cosine", "rsqrt")

# (parameter path as `jax.tree_util.keystr` writes it, parameter shape) -> a constant that
# broadcasts against the parameter (its update is multiplied by it), or None for 1.
UpdateScale = Callable[[str, tuple[int, ...]], "np.ndarray | float | None"]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 1e-3
  schedule: str = "cosine"         # constant | cosine | rsqrt (after warmup)
  warmup_steps: int = 0
  decay_steps: int | None = None   # cosine: steps from the start to the end of decay (None: train steps)
  end_learning_rate_ratio: float = 0.0  # cosine floor as a fraction of the peak
  b1: float = 0.9
  b2: float = 0.99
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float | None = 1.0    # global-norm clipping; None disables


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then the configured decay."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"OptimizerConfig.schedule={cfg.schedule!r}; known: {SCHEDULES}.")
  if cfg.learning_rate <= 0:
    raise ValueError(f"OptimizerConfig.learning_rate={cfg.learning_rate} must be positive.")
  peak, warmup = cfg.learning_rate, max(cfg.warmup_steps, 0)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif cfg.schedule == "cosine":
    decay = (cfg.decay_steps or total_steps) - warmup
    after = optax.cosine_decay_schedule(peak, max(decay, 1), alpha=cfg.end_learning_rate_ratio)
  else:  # rsqrt: peak * sqrt(warmup / step), continuous at the end of warmup
    shift = max(warmup, 1)
    after = lambda count: peak * jnp.sqrt(shift / (count + shift))
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def scale_updates(update_scale: UpdateScale) -> optax.GradientTransformation:
  """Multiplies each update by `update_scale(path, shape)`, a constant fixed at trace time. After
  AdamW this is exactly a per-element learning-rate multiplier (weight decay included)."""

  def scale(path, u):
    factor = update_scale(jax.tree_util.keystr(path), tuple(u.shape))
    return u if factor is None else u * jnp.asarray(factor, u.dtype)

  return optax.stateless(lambda updates, params: jax.tree_util.tree_map_with_path(scale, updates))


def make_optimizer(cfg: OptimizerConfig, total_steps: int,
                   update_scale: UpdateScale | None = None) -> optax.GradientTransformation:
  """clip -> AdamW(schedule) [-> scale_updates]; the trainer logs `make_schedule(cfg,
  total_steps)(step)`, the learning rate of every parameter that `update_scale` leaves at 1."""
  schedule = make_schedule(cfg, total_steps)
  chain = []
  if cfg.clip_norm is not None:
    chain.append(optax.clip_by_global_norm(cfg.clip_norm))
  chain.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  if update_scale is not None:
    chain.append(scale_updates(update_scale))
  return optax.chain(*chain)
