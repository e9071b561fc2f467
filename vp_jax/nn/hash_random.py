"""Counter-based uniform random numbers from an integer hash, cheap to compile on XLA:CPU.

jax.random's threefry expands into a large unrolled program per distinct shape; XLA:CPU takes
seconds to compile each one (measured here: 30 differently shaped `jax.random.uniform` draws in one
jit took 84 s to compile on a busy 2-core machine, the same draws with this hash 6-8 s). Models
with many small parameters (the SoundStream codec has ~90 convolution kernels) therefore initialize
with `lecun_uniform` below, and cheap in-step sampling (row sampling, quantizer dropout) uses
`uniform`. Values are a pure function of (key, position): murmur3's finalizer applied twice to
position * golden-ratio + key words. Not for cryptography; statistically fine for initialization
and sampling (mean/variance checked in tests).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp


def _key_words(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return key.reshape(-1).astype(jnp.uint32)


def _mix(x: jax.Array) -> jax.Array:
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Uniform in [0, 1) with 24 random bits, of `shape`."""
  words = _key_words(key)
  seed = _mix(words[0] ^ _mix(words[-1] + jnp.uint32(0x9E3779B9)))
  x = jax.lax.iota(jnp.uint32, max(math.prod(shape), 1)) * jnp.uint32(0x9E3779B9) + seed
  x = _mix(_mix(x))
  u = (x >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
  return u[:math.prod(shape)].reshape(tuple(shape)).astype(dtype)


def lecun_uniform(fan_in: int | None = None):
  """Initializer U(-a, a), a = sqrt(3 / fan_in): variance 1 / fan_in (as variance_scaling(1,
  "fan_in")). fan_in defaults to the product of all but the last dimension."""
  def init(key, shape, dtype=jnp.float32):
    fan = fan_in if fan_in is not None else math.prod(shape[:-1])
    return ((2.0 * uniform(key, shape) - 1.0) * math.sqrt(3.0 / max(fan, 1))).astype(dtype)
  return init
