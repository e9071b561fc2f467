"""Reading and writing the safetensors format with numpy only (bfloat16 included, via ml_dtypes).

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} and the raw little-endian data. Reading memory-maps the file, so converting a
multi-GB checkpoint touches each tensor once. Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Mapping

import ml_dtypes
import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: read-only memory-mapped array} of a .safetensors file."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes).")
    (n,) = struct.unpack("<Q", raw)
    size = os.path.getsize(path)
    if n > size - 8:
      raise ValueError(f"{path}: not a safetensors file (header length {n} > file size {size}).")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: not a safetensors file (bad JSON header: {e}).") from e
  header.pop("__metadata__", None)
  if not header:
    return {}
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}.")
    begin, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    shape = tuple(info["shape"])
    if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)) or end > data.size:
      raise ValueError(f"{path}: tensor {name!r} has data_offsets {info['data_offsets']} that do "
                       f"not match its shape {shape} and dtype {info['dtype']} (truncated file?).")
    out[name] = data[begin:end].view(dtype).reshape(shape)
  return out


def save(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
         metadata: Mapping[str, str] | None = None) -> None:
  """Writes `tensors` to a .safetensors file atomically (readable by HF's safetensors)."""
  path = os.fspath(path)
  header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
  arrays, offset = [], 0
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise ValueError(f"save {path}: tensor {name!r} has unsupported dtype {a.dtype}.")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    arrays.append(a)
    offset += a.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # align the data to 8 bytes
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      for a in arrays:
        f.write(a.tobytes())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
