"""Winograd F(2x2, 3x3) against oneDNN's direct kernels for the MAGVIT decoder's upsampling convs.

Why: the small preset's decode with MAGVIT-v2's 3x3x3 upsampling convs does twice the FLOPs of
magvit2-pytorch's (44.4 against 22.2 GFLOP per 17x64x64 clip), and with every convolution run by
oneDNN at the machine's peak (benchmarks/video_tokenizer.py) fewer multiplies are the one way
left to a faster decode. Winograd's F(2x2, 3x3) computes each 2x2 output tile of a 3x3 conv with
16 products per channel pair where the direct conv takes 36. This script times it on the decoder's
upsampling shapes against the tokenizer's own lowering (docs/magvit.md, "Speed against
magvit2-pytorch", stop 41, has the figures and the bound they imply).

`winograd_conv3d` is the causal 3x3x3 convolution (time padded on the past side, "SAME" in space,
stride 1, even H and W) as: the input cut into overlapping 4x4 tiles at stride 2 (strided slices),
the input transform B^T d B, the kt time taps concatenated into the channels (as
`vp_jax.models.magvit.conv.conv3d_as_2d` does), one product for each of the 16 transformed positions
against the transformed kernel G g G^T, and the output transform A^T m A back to 2x2 tiles
(Lavin & Gray, arXiv 1509.09308). The 16 products run as one batched `jnp.einsum` by XLA
("xla") or as 16 oneDNN matmuls ("onednn", `mfu.matmul_fn`), with float32 or bfloat16
operands (float32 sums). Not used by the model: it was slower than oneDNN's direct kernels with
bfloat16 operands at every shape measured.

  python benchmarks/winograd_conv.py                 # the small preset's three upsampling convs
  python benchmarks/winograd_conv.py --repeats 7 --shapes 17x32x32x64x256
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from vp_jax import cpu_allocator

KEEP_MAPPED = cpu_allocator.configure()   # as the tokenizer runs (benchmarks/video_tokenizer.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfu import matmul_fn  # noqa: E402

from vp_jax.models.magvit import conv as magvit_conv  # noqa: E402
from vp_jax.nn import onednn_conv  # noqa: E402
from vp_jax.tokenizers import cpu_compile  # noqa: E402

# F(2x2, 3x3) (Lavin & Gray): input transform B^T [4, 4], kernel transform G [4, 3], output
# transform A^T [2, 4].
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
MATMULS = ("xla", "onednn")
OPERANDS = ("float32", "bfloat16")
# The small preset's decoder upsampling convs at 17x64x64 clips: (T, H, W, Cin, Cout).
SMALL_UPSAMPLING = ((17, 32, 32, 64, 256), (9, 16, 16, 64, 512), (5, 8, 8, 128, 1024))


def _transform(rows: list[jax.Array], matrix: np.ndarray, axis: int) -> jax.Array:
  """sum_j matrix[i, j] * rows[j] for each row i of `matrix`, stacked on `axis` (only the nonzero
  terms, so +-1 entries cost one add each)."""
  out = []
  for coeffs in matrix:
    acc = None
    for c, r in zip(coeffs, rows):
      if c == 0:
        continue
      term = r if c == 1 else -r if c == -1 else c * r
      acc = term if acc is None else acc + term
    out.append(acc)
  return jnp.stack(out, axis=axis)


def _products(v: jax.Array, u: jax.Array, matmul: str, operands: str) -> jax.Array:
  """[16, N, K] x [16, K, Cout] -> [16, N, Cout] float32, one product per transformed position."""
  dt = jnp.dtype(operands)
  if matmul == "xla":
    return jnp.einsum("pnk,pko->pno", v.astype(dt), u.astype(dt),
                      preferred_element_type=jnp.float32)
  product = matmul_fn("onednn", operands)
  return jnp.stack([product(v[p].astype(dt), u[p].astype(dt)) for p in range(v.shape[0])])


def winograd_conv3d(x: jax.Array, kernel: jax.Array, matmul: str = "xla",
                    operands: str = "float32") -> jax.Array:
  """x [B, T, H, W, Cin] (H, W even), kernel [kt, 3, 3, Cin, Cout] -> [B, T, H, W, Cout] float32:
  the causal conv `vp_jax.models.magvit.conv.conv3d_native(x, kernel, (1, 1, 1), ((1, 1),
  (1, 1)))` by F(2x2, 3x3), its 16 products by `matmul` ("xla" or "onednn") in `operands`."""
  kt, kh, kw, cin, cout = kernel.shape
  b, t, h, w, _ = x.shape
  if (kh, kw) != (3, 3) or h % 2 or w % 2 or x.shape[-1] != cin:
    raise ValueError(f"winograd_conv3d: x {x.shape}, kernel {kernel.shape}; needs a 3x3 spatial "
                     f"kernel over x's channels and even H and W")
  if matmul not in MATMULS or operands not in OPERANDS:
    raise ValueError(f"winograd_conv3d: matmul {matmul!r} (one of {MATMULS}), operands "
                     f"{operands!r} (one of {OPERANDS})")
  nh, nw = h // 2, w // 2
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (kt - 1, 0), (1, 1), (1, 1), (0, 0)))
  v = _transform([xp[:, :, i:i + h:2] for i in range(4)], B_T, 0)          # [4, B, T', nh, W+2, C]
  v = _transform([v[..., j:j + w:2, :] for j in range(4)], B_T, 1)         # [4, 4, B, T', nh, nw, C]
  v = jnp.concatenate([v[:, :, :, a:a + t] for a in range(kt)], axis=-1)   # taps into channels
  v = v.reshape(16, b * t * nh * nw, kt * cin)
  u = jnp.einsum("ai,bj,tijco->abtco", G, G, kernel.astype(jnp.float32))   # [4, 4, kt, Cin, Cout]
  m = _products(v, u.reshape(16, kt * cin, cout), matmul, operands)
  m = m.reshape(4, 4, b, t, nh, nw, cout)
  y = _transform(list(m), A_T, 0)                                          # [2, 4, B, T, nh, nw, O]
  y = _transform([y[:, j] for j in range(4)], A_T, 1)                      # [2, 2, B, T, nh, nw, O]
  return y.transpose(2, 3, 4, 0, 5, 1, 6).reshape(b, t, h, w, cout)


def direct_conv3d(x: jax.Array, kernel: jax.Array, operands: str = "float32") -> jax.Array:
  """The same conv as the tokenizer runs it on CPU: oneDNN's direct kernels with `operands` where
  this XLA:CPU has them (`conv3d_onednn`), else XLA's float32 one (`conv3d_as_2d`)."""
  padding = ((1, 1), (1, 1))
  if onednn_conv.available(operands):
    return magvit_conv.conv3d_onednn(x, kernel, (1, 1, 1), padding, operands)
  return magvit_conv.conv3d_as_2d(x, kernel, (1, 1, 1), padding)


def variants() -> dict:
  """{name: fn(x, kernel)}: the direct conv, then Winograd with each product backend, float32
  operands, then the same with bfloat16 operands where this CPU runs them fast
  (`onednn_conv.available("bfloat16")`: the case in question; elsewhere the tokenizer keeps
  float32). The oneDNN variants only where this XLA:CPU runs oneDNN."""
  out = {}
  for op in OPERANDS:
    if op == "bfloat16" and not onednn_conv.available(op):
      continue
    out[f"direct_{op}"] = lambda x, k, op=op: direct_conv3d(x, k, op)
    for mm in MATMULS:
      if mm == "onednn" and not onednn_conv.available(op):
        continue
      out[f"winograd_{mm}_{op}"] = lambda x, k, mm=mm, op=op: winograd_conv3d(x, k, mm, op)
  return out


def time_variant(fn, x, kernel, repeats: int) -> tuple[float, np.ndarray]:
  """(best seconds of `repeats` calls after a warm-up, the result) of fn jitted as the tokenizer
  jits its CPU convolutions."""
  jitted = jax.jit(fn, compiler_options=cpu_compile.CONV_INFERENCE_OPTIONS)
  y = np.asarray(jitted(x, kernel))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(x, kernel))
    best = min(best, time.perf_counter() - t0)
  return best, y


def parse_shape(text: str) -> tuple[int, ...]:
  """"TxHxWxCinxCout" -> (T, H, W, Cin, Cout)."""
  dims = tuple(int(d) for d in text.split("x"))
  if len(dims) != 5 or min(dims) < 1 or dims[1] % 2 or dims[2] % 2:
    raise ValueError(f"--shapes {text!r}: TxHxWxCinxCout with even H and W")
  return dims


def main(argv=None) -> dict:
  p = argparse.ArgumentParser()
  p.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SMALL_UPSAMPLING),
                 help="comma-separated TxHxWxCinxCout (default: the small preset's upsampling "
                      "convs at 17x64x64 clips)")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  try:
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
  except ValueError as e:
    p.error(str(e))
  print(f"{os.cpu_count()} CPUs, {'keep-mapped' if KEEP_MAPPED else 'glibc default'} malloc; "
        f"best of {args.repeats}; error: max |y - direct float32| / max |direct float32|",
        flush=True)
  results = {}
  for t, h, w, cin, cout in shapes:
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (1, t, h, w, cin), jnp.float32)
    kernel = jax.random.normal(kk, (3, 3, 3, cin, cout), jnp.float32) / np.sqrt(27 * cin)
    flops = 2 * t * h * w * 27 * cin * cout                    # the direct conv's
    ref = None
    for name, fn in variants().items():
      seconds, y = time_variant(fn, x, kernel, args.repeats)
      ref = y if name == "direct_float32" else ref             # the first variant
      err = float(np.abs(y - ref).max() / np.abs(ref).max())
      results[(t, h, w, cin, cout), name] = {"s": seconds, "error": err,
                                            "direct_gflops": flops / seconds / 1e9}
      print(f"{t}x{h}x{w}, {cin} -> {cout}: {name:24s} {seconds * 1e3:8.2f} ms "
            f"({flops / seconds / 1e9:6.1f} GFLOP/s of direct-conv FLOPs), error {err:.1e}",
            flush=True)
  return results


if __name__ == "__main__":
  main()
