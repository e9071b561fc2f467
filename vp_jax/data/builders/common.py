"""What the folder builders share: the captions file, the bad-file policy and its skip report.

Captions: `captions.jsonl` (one object per line) or `captions.csv` (with a header) next to the media,
fields `file` (path relative to the folder), `caption`, and optionally `audio` (a separate audio file
for a video) and `split` (default "train").

Bad files (missing, corrupt, too short, no audio when audio is required, empty caption): with
`on_error="raise"` the first one stops the build with a `BadExampleError` naming the file and the
reason; with `on_error="skip"` it is left out and counted by reason, and the build fails with a
`TooManySkippedError` when more than `max_skip_fraction` of the listed files were skipped. Nothing is
ever looped or padded to hide a defect. The counts are written to `skipped.json` in the dataset
directory.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
from typing import Any


class BadExampleError(ValueError):
  """One input file cannot be used; the message names it and says why."""

  def __init__(self, path: str, reason: str, detail: str = ""):
    self.path, self.reason = path, reason
    super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class TooManySkippedError(RuntimeError):
  """More than the allowed fraction of inputs were bad."""


ON_ERROR = ("raise", "skip")
REASONS = ("missing_file", "corrupt", "too_short", "missing_audio", "empty_caption")


@dataclasses.dataclass(frozen=True)
class CaptionRow:
  file: str        # absolute path of the media file
  caption: str
  audio: str | None  # absolute path of a separate audio file, if given
  split: str
  line: int        # 1-based row number in the captions file (for messages)


def find_captions_file(source_dir: str, captions: str | None = None) -> str:
  if captions:
    path = captions if os.path.isabs(captions) else os.path.join(source_dir, captions)
    if not os.path.exists(path):
      raise FileNotFoundError(f"captions file {path} does not exist.")
    return path
  for name in ("captions.jsonl", "captions.csv"):
    path = os.path.join(source_dir, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"{source_dir}: no captions.jsonl or captions.csv (or pass captions=).")


def read_captions(source_dir: str, captions: str | None = None) -> list[CaptionRow]:
  """Parses the captions file; malformed rows are errors naming the file and line."""
  path = find_captions_file(source_dir, captions)
  rows: list[dict[str, Any]] = []
  if path.endswith(".jsonl"):
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          rows.append(dict(json.loads(line), _line=n))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
          raise ValueError(f"{path}:{n}: not a JSON object ({e}).") from e
  elif path.endswith(".csv"):
    with open(path, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f)
      for n, row in enumerate(reader, 2):
        rows.append(dict(row, _line=n))
  else:
    raise ValueError(f"{path}: captions must be .jsonl or .csv.")
  out = []
  for row in rows:
    if not row.get("file"):
      raise ValueError(f"{path}:{row['_line']}: row has no 'file' field.")
    audio = row.get("audio") or None
    out.append(CaptionRow(
        file=os.path.join(source_dir, row["file"]), caption=str(row.get("caption") or "").strip(),
        audio=os.path.join(source_dir, audio) if audio else None,
        split=str(row.get("split") or "train"), line=int(row["_line"])))
  return out


class SkipCounter:
  """Applies the bad-file policy and keeps the counts for the report."""

  def __init__(self, on_error: str = "raise", max_skip_fraction: float = 0.1):
    if on_error not in ON_ERROR:
      raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}.")
    if not 0.0 <= max_skip_fraction <= 1.0:
      raise ValueError(f"max_skip_fraction={max_skip_fraction}: must be in [0, 1].")
    self.on_error, self.max_skip_fraction = on_error, max_skip_fraction
    self.seen = 0
    self.skipped: list[dict[str, str]] = []

  def handle(self, error: BadExampleError) -> None:
    """Raises under on_error='raise', otherwise records the skip."""
    if self.on_error == "raise":
      raise error
    self.skipped.append({"file": error.path, "reason": error.reason, "message": str(error)})

  def check(self, what: str) -> None:
    """Fails when more than the allowed fraction of `seen` inputs were skipped."""
    if self.seen and len(self.skipped) > self.max_skip_fraction * self.seen:
      reasons = collections.Counter(s["reason"] for s in self.skipped)
      raise TooManySkippedError(
          f"{what}: skipped {len(self.skipped)} of {self.seen} files "
          f"({len(self.skipped) / self.seen:.1%} > max_skip_fraction {self.max_skip_fraction:.1%});"
          f" reasons: {dict(reasons)}; first: {self.skipped[0]['message']}")

  def report(self) -> dict[str, Any]:
    return {"seen": self.seen, "skipped": len(self.skipped),
            "by_reason": dict(collections.Counter(s["reason"] for s in self.skipped)),
            "files": self.skipped}

  def write(self, directory: str, name: str = "skipped.json") -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
      json.dump(self.report(), f, indent=1)
    return path
