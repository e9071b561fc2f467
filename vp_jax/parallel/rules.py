"""Logical axis names and the rules that map them onto the (data, fsdp, tensor) mesh.

Models annotate parameters and key activations with a small set of logical names (t5x style); which
mesh axis each name is sharded over is configuration, chosen by a named rule set or given in gin.

Parameter axes: `embed`, `mlp`, `heads`, `kv`, `vocab`, `layers` (the scanned layer axis), `norm`.
Activation axes: `batch`, `length`, `act_embed`, `act_mlp`, `act_heads`, `act_vocab`.
Convolutional models (the MAGVIT-v2 and SoundStream tokenizers and their discriminators):
kernels `conv_kernel`, `conv_in`, `conv_out`, activations `act_conv` (channels); replicated by default
(tokenizers are small; they scale by data parallelism).
"""
from __future__ import annotations

from typing import Sequence

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "vocab", "layers", "norm",
                "act_embed", "act_mlp", "act_heads", "act_vocab", "conv_kernel", "conv_in", "conv_out",
                "act_conv")

# Data parallel everywhere, parameters sharded over `fsdp` along their embedding dimension, tensor
# parallelism over the feed-forward, head and vocabulary dimensions (Megatron layout).
DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("conv_kernel", None),
    ("conv_in", None),
    ("conv_out", None),
    ("act_conv", None),
)

RULE_SETS: dict[str, LogicalRules] = {"default": DEFAULT_RULES}


def get_rules(name_or_rules: str | Sequence[Sequence]) -> LogicalRules:
  """Returns a named rule set, or validates and normalizes explicit `(logical, mesh)` pairs."""
  if isinstance(name_or_rules, str):
    if name_or_rules not in RULE_SETS:
      raise ValueError(f"Unknown logical axis rule set {name_or_rules!r}; "
                       f"known: {sorted(RULE_SETS)}.")
    return RULE_SETS[name_or_rules]
  rules = []
  for pair in name_or_rules:
    if len(pair) != 2 or not isinstance(pair[0], str):
      raise ValueError(f"A logical axis rule must be (logical_name, mesh_axes), got {pair!r}.")
    mesh_axes = pair[1]
    rules.append((pair[0], tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
  return tuple(rules)
