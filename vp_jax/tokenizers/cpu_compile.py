"""XLA:CPU compile options for the video tokenizer's encode and decode.

Why: on XLA:CPU (jaxlib 0.10.2) convolutions go to YNNPACK by default, which at MAGVIT's shapes
runs them at ~35% of the machine's matmul peak; with YNNPACK off for the function, XLA's own
(Eigen) convolutions run at 60-70%. Measured (`benchmarks/video_tokenizer.py`, small preset,
1x17x64x64, quiet 2-core CPU): encode 57 -> 90-103 frames/s, decode 25 -> 37-40 frames/s.
It is an option of the jitted function, not of the process: in *training* the YNNPACK path was the
faster one (a MAGVIT small train step at 8x9x32x32: 3.4 s with it, 4.1 s without), the prefix LM's
matmuls are faster with it too, and SoundStream's 1D convolutions gained nothing (decode slower).
"""
from __future__ import annotations

from typing import Callable

import jax

# An empty list of YNNPACK fusion types: no YNNPACK fusions in the compiled function.
CONV_INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def conv_inference_jit(fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`jax.jit(fn)`, compiled with CONV_INFERENCE_OPTIONS when every device of `mesh` is a CPU
  (other backends get plain `jax.jit`)."""
  if all(d.platform == "cpu" for d in mesh.devices.flat):
    return jax.jit(fn, compiler_options=CONV_INFERENCE_OPTIONS)
  return jax.jit(fn)
