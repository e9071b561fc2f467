"""t5x-style command-line configuration: `--gin_file=F` (repeatable), `--gin.NAME=VALUE`,
`--gin_search_paths=a,b`.

Bindings are validated when parsed: a misspelled configurable or parameter, or a malformed value,
raises `ConfigError` naming it before any model is built. `%gin.REQUIRED` values that are left unset
raise when the configured function is called, also before any compute. The full config
(`config.gin`) and the operative one (`operative_config.gin`, what was actually used) are written to
the model dir.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import tokenize
from typing import Callable, Sequence

import gin

REPO_GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin"


class ConfigError(ValueError):
  """A gin file or binding is invalid."""


class _SearchPathMissFilter(logging.Filter):
  """Drops gin's `ERROR Path not found: P` records. gin's package-resource reader logs one for
  each search-path prefix an `include` is *not* under, before it tries the prefix that has it, so
  every run printed errors that were not errors. An include found under no prefix still raises
  (`ConfigError` in `configure`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.ERROR and isinstance(record.msg, str)
                and record.msg.startswith("Path not found: "))


@contextlib.contextmanager
def _quiet_search_path_misses():
  root = logging.getLogger()            # gin logs through the root logger
  miss_filter = _SearchPathMissFilter()
  root.addFilter(miss_filter)
  try:
    yield
  finally:
    root.removeFilter(miss_filter)


@dataclasses.dataclass(frozen=True)
class GinFlags:
  files: tuple[str, ...] = ()
  bindings: tuple[str, ...] = ()
  search_paths: tuple[str, ...] = ()
  rest: tuple[str, ...] = ()


def parse_flags(argv: Sequence[str]) -> GinFlags:
  """Splits argv into gin files, bindings, search paths and other arguments."""
  files, bindings, paths, rest = [], [], [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    name, eq, value = arg.partition("=")
    if name in ("--gin_file", "--gin_search_paths") and not eq:
      if i + 1 >= len(args):
        raise ConfigError(f"{name} needs a value.")
      i += 1
      value = args[i]
    if name == "--gin_file":
      files.append(value)
    elif name == "--gin_search_paths":
      paths.extend(p for p in value.split(",") if p)
    elif name.startswith("--gin."):
      if not eq:
        raise ConfigError(f"{arg}: expected --gin.NAME=VALUE.")
      bindings.append(f"{name[len('--gin.'):]} = {value}")
    elif name == "--gin_bindings":
      bindings.append(value)
    else:
      rest.append(arg)
    i += 1
  return GinFlags(tuple(files), tuple(bindings), tuple(paths), tuple(rest))


def configure(flags: GinFlags) -> None:
  """Parses the gin files and bindings (after registering vp_jax's configurables)."""
  import vp_jax.config.configurables  # noqa: F401  (registers the configurables)
  gin.clear_config()
  for path in (*flags.search_paths, os.getcwd(), str(REPO_GIN_DIR)):
    gin.add_config_file_search_path(path)
  for f in flags.files:
    if not any(os.path.exists(os.path.join(p, f)) for p in ("", *flags.search_paths, os.getcwd(),
                                                            str(REPO_GIN_DIR))):
      raise ConfigError(f"--gin_file={f}: file not found (searched {list(flags.search_paths)} + "
                        f"current dir + {REPO_GIN_DIR}).")
  errors = (ValueError, KeyError, SyntaxError, TypeError, tokenize.TokenError)
  try:
    with _quiet_search_path_misses():
      gin.parse_config_files_and_bindings(list(flags.files), None, finalize_config=False)
  except (*errors, OSError) as e:            # OSError: an `include` found under no search path
    raise ConfigError(f"Invalid gin file: {e}") from e
  for binding in flags.bindings:
    try:
      gin.parse_config(binding)
    except errors as e:
      raise ConfigError(f"Invalid gin binding {binding!r}: {e}") from e
  try:
    gin.finalize()
  except errors as e:
    raise ConfigError(f"Invalid gin config: {e}") from e


def query_macro(name: str):
  """The value bound to a gin macro (e.g. MODEL_DIR), or None when unbound or REQUIRED."""
  try:
    value = gin.query_parameter(f"%{name}")
  except ValueError:
    return None
  if isinstance(value, gin.config.ConfigurableReference) or value is gin.REQUIRED:
    return None
  return value


def write_config(model_dir: str, operative: bool) -> None:
  """Writes config.gin (all bindings) or operative_config.gin (the ones used) to model_dir."""
  import jax
  if jax.process_index() != 0:
    return
  os.makedirs(model_dir, exist_ok=True)
  name, text = (("operative_config.gin", gin.operative_config_str()) if operative
                else ("config.gin", gin.config_str()))
  with open(os.path.join(model_dir, name), "w") as f:
    f.write(text)


def run(main: Callable[[], object], argv: Sequence[str], model_dir_macro: str = "MODEL_DIR"):
  """Configure from argv, write config.gin, call `main()` (a gin-configured function), then
  write operative_config.gin. Config errors exit with status 2 and the message."""
  try:
    flags = parse_flags(argv)
    if flags.rest:
      raise ConfigError(f"Unknown arguments: {list(flags.rest)}")
    configure(flags)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from e
  model_dir = query_macro(model_dir_macro)
  if model_dir:
    write_config(model_dir, operative=False)
  try:
    return main()
  except RuntimeError as e:
    if "Required bindings" in str(e) or "REQUIRED" in str(e):
      print(f"error: missing required gin value: {e}", file=sys.stderr)
      raise SystemExit(2) from e
    raise
  finally:
    if model_dir:
      write_config(model_dir, operative=True)
