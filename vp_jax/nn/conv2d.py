"""A 2D convolution whose kernel gradient is computed as one matmul per kernel tap.

Why: XLA:CPU computes a convolution's kernel gradient as another convolution whose window is the
whole activation (e.g. 32 x 32), and that path runs at 1-2 GFLOP/s; in a MAGVIT train step on CPU
those kernel gradients took more than half of the step. Here the backward pass computes, for each
tap (i, j) of the kernel, dK[i, j] = x_tap^T @ dy with x_tap the input window that tap reads
([N * H' * W', Cin]) and dy the output gradient ([N * H' * W', Cout]): kh * kw plain matmuls, which
XLA:CPU runs near its matmul peak. The input gradient and the forward pass stay XLA's own
convolutions. Same function and same gradients as `lax.conv_general_dilated` (tested).

Layout: x [N, H, W, Cin], kernel [kh, kw, Cin, Cout] (NHWC / HWIO); explicit padding; no
dilation or feature groups.

Below PER_TAP_MIN_FLOPS of kernel-gradient work a call is a plain `lax.conv_general_dilated`:
there XLA's own path is fast enough, and the per-tap backward only adds compile time (+35% on a
`tiny` MAGVIT train step, which is what the tests and the demo compile) and per-call overhead.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

Padding = tuple[tuple[int, int], tuple[int, int]]

# 2 * N*H'*W' * Cin * Cout * kh * kw: the MAGVIT `small` preset's convolutions are 1-4 GFLOP at
# 8 x 9x32x32, the `tiny` ones in the tests and the demo mostly below 0.3 GFLOP.
PER_TAP_MIN_FLOPS = 5e8


def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda a: _conv(a, kernel, strides, padding), x)
  (dx,) = input_vjp(dy)
  kh, kw, cin, cout = kernel.shape
  (sh, sw), (n, ho, wo, _) = strides, dy.shape
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  dy_rows = dy.reshape(n * ho * wo, cout)
  taps = []
  for i in range(kh):
    for j in range(kw):
      end = (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin)
      window = jax.lax.slice(xp, (0, i, j, 0), end, (1, sh, sw, 1))         # [N, H', W', Cin]
      taps.append(jnp.dot(window.reshape(n * ho * wo, cin).T, dy_rows,
                          preferred_element_type=jnp.float32))               # [Cin, Cout]
  dk = jnp.stack(taps).reshape(kh, kw, cin, cout).astype(kernel.dtype)
  return dx, dk


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: Sequence[Sequence[int]]) -> jax.Array:
  """x [N, H, W, Cin] * kernel [kh, kw, Cin, Cout] with `strides` (sh, sw) and explicit
  `padding` ((top, bottom), (left, right)) -> [N, H', W', Cout]."""
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv2d: x {x.shape} must be [N, H, W, C] and kernel {kernel.shape} "
                     f"[kh, kw, C, Cout] with the same C.")
  pad = tuple((int(lo), int(hi)) for lo, hi in padding)
  strides = tuple(int(s) for s in strides)
  n, h, w, _ = x.shape
  kh, kw, cin, cout = kernel.shape
  ho = (h + sum(pad[0]) - kh) // strides[0] + 1
  wo = (w + sum(pad[1]) - kw) // strides[1] + 1
  if 2 * n * ho * wo * cin * cout * kh * kw < PER_TAP_MIN_FLOPS:
    return _conv(x, kernel, strides, pad)
  return _conv2d(x, kernel, strides, pad)
