"""What `vp_jax.cpu_allocator` is worth: MAGVIT encode / decode times and page faults per call with
glibc's default malloc and with the launchers' keep-mapped settings, in one process.

Both arms run in this process, alternating round by round so that a change in the machine's load
hits both: M_ARENA_MAX=1 is set once at start-up (it cannot be undone for running threads; alone it
leaves the faults as they are), then each round switches M_MMAP_MAX / M_TRIM_THRESHOLD between
glibc's defaults and the keep-mapped values (`cpu_allocator.set_keep_mapped`). Each arm's time is
the minimum and the median over rounds x `--calls`; faults are minor page faults per call
(`getrusage`). Computation is the same in both arms, so the outputs are compared too.

  python benchmarks/cpu_allocator.py                             # small, 1x17x64x64, 8 rounds
  python benchmarks/cpu_allocator.py --config paper --frames 5 --size 64 --rounds 3
  python benchmarks/cpu_allocator.py --cpu_convs xla               # XLA's own convolutions
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vp_jax import cpu_allocator  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="small")
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--rounds", type=int, default=8)
  p.add_argument("--calls", type=int, default=3, help="timed calls per arm and round")
  p.add_argument("--cpu_convs", default="onednn", choices=["onednn", "onednn_bf16", "xla"],
                 help="the tokenizer's CPU convolutions (VideoTokenizer.cpu_convs)")
  args = p.parse_args(argv)
  if cpu_allocator._libc() is None:
    sys.exit("benchmarks/cpu_allocator.py: needs Linux with glibc (mallopt).")
  cpu_allocator._mallopt(cpu_allocator.M_ARENA_MAX, 1)     # before jax starts its threads

  import jax
  import jax.numpy as jnp
  import numpy as np
  from vp_jax.models.magvit import preset
  from vp_jax.models.magvit.tokenizer import create_tokenizer
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer

  tok = VideoTokenizer.from_module(create_tokenizer(preset(args.config)),
                                  cpu_convs=args.cpu_convs)
  clip = np.random.RandomState(0).randint(0, 256, (1, args.frames, args.size, args.size, 3))
  x = jnp.asarray(clip.astype(np.uint8))
  ids = tok.encode(x)
  calls = {"encode": lambda: tok.encode(x), "decode": lambda: tok.decode(ids)}
  arms = {"glibc default": False, "keep mapped": True}
  times = {(c, a): [] for c in calls for a in arms}
  faults = {k: [] for k in times}
  outputs = {}
  for _ in range(args.rounds):
    for arm, keep in arms.items():
      cpu_allocator.set_keep_mapped(keep)
      for name, fn in calls.items():
        outputs[(name, arm)] = np.asarray(jax.block_until_ready(fn()))    # first call of the arm
        for _ in range(args.calls):
          f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
          jax.block_until_ready(fn())
          times[(name, arm)].append(time.perf_counter() - t0)
          faults[(name, arm)].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
  print(f"{args.config} 1x{args.frames}x{args.size}x{args.size}, cpu_convs {args.cpu_convs}: "
        f"{args.rounds} rounds x "
        f"{args.calls} calls per arm, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}")
  for name in calls:
    same = np.array_equal(outputs[(name, 'glibc default')], outputs[(name, 'keep mapped')])
    row = []
    for arm in arms:
      t = np.array(times[(name, arm)]) * 1e3
      row.append((t.min(), np.median(t)))
      print(f"  {name} {arm:13s}: min {t.min():7.1f} ms, median {np.median(t):7.1f} ms, "
            f"{int(np.median(faults[(name, arm)])):6d} minor faults per call")
    print(f"  {name} keep mapped / glibc default: {row[0][0] / row[1][0]:.2f}x faster (min), "
          f"{row[0][1] / row[1][1]:.2f}x (median); outputs identical: {same}")


if __name__ == "__main__":
  main()
