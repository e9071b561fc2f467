"""Rematerialization (activation checkpointing) policies by name, so configs can choose them.

`none` saves every activation (no recomputation); `full` saves nothing but the layer inputs;
`dots` saves matmul outputs (`dots_saveable`); `dots_no_batch` saves matmuls without batch dimensions
(weights-only matmuls, the usual choice for transformers).
"""
from __future__ import annotations

from typing import Callable

import jax

REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat(fn: Callable, policy: str) -> Callable:
  """Wraps `fn` with jax.checkpoint under the named policy (`none` returns `fn` unchanged)."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat policy {policy!r}; known: {sorted(REMAT_POLICIES)}.")
  if policy == "none":
    return fn
  return jax.checkpoint(fn, policy=REMAT_POLICIES[policy], prevent_cse=False)
