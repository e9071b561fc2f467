"""Model FLOPs of a JAX function counted like torch.utils.flop_counter: 2 per multiply-add of every
convolution and dot_general in its jaxpr, nothing else.

Why: the tokenizer benchmarks compare our throughput with PyTorch references whose FLOPs torch's
counter gives in that convention; XLA's `cost_analysis()` also counts elementwise ops (norms,
activations, padding copies), so the two would not be comparable. `vp_jax.nn.onednn_conv`'s
primitive counts as the convolution it is. Sub-jaxprs are walked: `pjit` / custom-derivative calls
once, `scan` bodies x length, `cond`/`switch` (and `platform_dependent`, which stages out every
platform's branch) the largest branch, `while` bodies once.
"""
from __future__ import annotations

import math

import jax
from jax.extend import core as jcore


def conv_matmul_flops(fn, *args) -> float:
  """2 x multiply-adds of the convolutions and matmuls `fn(*args)` traces to."""
  return float(_jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr))


def _subjaxprs(value):
  if isinstance(value, jcore.ClosedJaxpr):
    return [value.jaxpr]
  if isinstance(value, jcore.Jaxpr):
    return [value]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _subjaxprs(v)]
  return []


def _jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * (math.prod(rhs) // out_features)
    elif name == "onednn_conv":        # vp_jax.nn.onednn_conv: channels-last, kernel [..., Cin, Cout]
      rhs = eqn.invars[1].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * (math.prod(rhs) // rhs[-1])
    elif name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    elif name == "cond":
      total += max(_jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    elif name == "scan":
      total += eqn.params["length"] * _jaxpr_flops(eqn.params["jaxpr"].jaxpr)
    else:
      for value in eqn.params.values():
        for sub in _subjaxprs(value):
          total += _jaxpr_flops(sub)
  return total
