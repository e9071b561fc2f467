"""Clocks that stand in for a module's `time` in tests, so timed figures are exact (the benchmark
smoke tests and the progress-line tests patch `module.time` with one of these), and a reader of
the figures a benchmark prints."""
import re


class ScriptedClock:
  """Stands in for a benchmark module's `time`: successive perf_counter() calls return the start
  and end of each interval in turn, so the k-th timed region lasts exactly intervals[k]."""

  def __init__(self, intervals):
    self.times, t = [], 100.0
    for d in intervals:
      self.times += [t, t + d]
      t += d + 1.0
    self.calls = 0

  def perf_counter(self):
    assert self.calls < len(self.times), "the benchmark read the clock more often than scripted"
    self.calls += 1
    return self.times[self.calls - 1]

  @property
  def done(self):
    return self.calls == len(self.times)


class ManualClock:
  """A `time` whose perf_counter only moves when `advance` is called or `now` is set."""

  def __init__(self, now=0.0):
    self.now = now

  def perf_counter(self):
    return self.now

  def advance(self, seconds):
    self.now += seconds


def printed_floats(pattern, text):
  """Every number `pattern`'s groups match in `text` (multi-line mode), in order; commas dropped."""
  found = re.findall(pattern, text, re.M)
  return [float(x.replace(",", "")) for m in found for x in (m if isinstance(m, tuple) else (m,))]
