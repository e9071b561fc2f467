"""Reading a workdir's JSON config file so that a bad file is reported by its path.

Tokenizer workdirs record their model config as JSON (`magvit_config.json`,
`soundstream_config.json`) and every later load goes through it; a torn write or a hand edit
must fail with the file named, not with a bare `json` or dataclass error.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable


def read_json_object(path: str) -> dict[str, Any]:
  """The JSON object in `path`; FileNotFoundError / ValueError naming `path` otherwise."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    raw = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); a torn write or a hand edit?") from e
  if not isinstance(raw, dict):
    raise ValueError(f"{path}: expected a JSON object of config fields, got "
                     f"{type(raw).__name__}.")
  return raw


def lists_to_tuples(raw: dict[str, Any]) -> dict[str, Any]:
  """A config dict after a JSON round trip with its lists turned back into the tuples that frozen
  dataclass configs hold."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def config_from_dict(cls, raw: dict[str, Any], path: str, *,
                     build: Callable[[dict[str, Any]], Any] | None = None):
  """`build(raw)` (default: `cls(**raw)` with JSON lists turned back into tuples; a config with
  nested dataclasses passes its own), then `validate()`; an unknown field or an invalid value is a
  ValueError naming `path` and the dataclass."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = set(raw) - known
  if unknown:
    raise ValueError(f"{path}: unknown {cls.__name__} fields {sorted(unknown)}.")
  try:
    cfg = build(raw) if build else cls(**lists_to_tuples(raw))
    cfg.validate()
  except (AttributeError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a valid {cls.__name__}: {e}") from e
  return cfg
