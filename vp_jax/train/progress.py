"""A progress line for long loops: step, throughput, ETA and the latest metrics.

On a terminal the line is redrawn in place; otherwise (CI, log files) it prints a full line at most
every `min_interval_s` seconds so logs stay short. Only process 0 prints.
"""
from __future__ import annotations

import sys
import time
from typing import Mapping, TextIO


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
  def __init__(self, total: int, start: int = 0, *, desc: str = "train",
               stream: TextIO | None = None, min_interval_s: float = 5.0, enabled: bool = True,
               unit: str = "steps"):
    self.total, self.start, self.desc, self.unit = total, start, desc, unit
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.min_interval_s = 0.0 if self.interactive else min_interval_s
    self._t0 = time.perf_counter()
    self._last_print = -float("inf")

  def line(self, step: int, metrics: Mapping[str, float] | None = None) -> str:
    elapsed = time.perf_counter() - self._t0
    done = step - self.start
    rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    width = 20
    filled = min(width, int(width * step / max(self.total, 1)))   # a resumed run may pass total
    bar = "#" * filled + "." * (width - filled)
    parts = [f"{self.desc} [{bar}] {step}/{self.total}", f"{rate:.2f} {self.unit}/s",
             f"ETA {format_duration(eta) if eta == eta else '--:--'}"]
    for k, v in (metrics or {}).items():
      parts.append(f"{k}={v:.4g}")
    return " | ".join(parts)

  def update(self, step: int, metrics: Mapping[str, float] | None = None, *,
             force: bool = False) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    if not force and now - self._last_print < self.min_interval_s and step < self.total:
      return
    self._last_print = now
    text = self.line(step, metrics)
    if self.interactive:
      self.stream.write("\r" + text + ("\n" if step >= self.total else ""))
    else:
      self.stream.write(text + "\n")
    self.stream.flush()
