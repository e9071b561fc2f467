"""HuggingFace T5 v1.1 checkpoints (safetensors or a PyTorch state dict) <-> T5Encoder parameters.

Reads what `save_pretrained` writes for `T5EncoderModel` / `T5ForConditionalGeneration` (e.g.
google/t5-v1_1-xl): a directory with `config.json` and `model.safetensors` (or the sharded
`model.safetensors.index.json`, or `pytorch_model.bin[.index.json]`), or a single weights file.
torch Linear weights are [out, in]; ours are [in, out] with the attention's inner width split into
[heads, head_dim]. The decoder and the LM head are ignored. `save_hf` writes the same layout back
(the demo encoder ships in it, so the demo loads through exactly this code).
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import ml_dtypes
import numpy as np

from vp_jax.text import safetensors_io
from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.convert_common import CheckpointConversionError, Reader, assemble, flatten

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def is_hf_checkpoint(path: str | os.PathLike) -> bool:
  path = os.fspath(path)
  if os.path.isfile(path):
    return path.endswith((".safetensors",) + TORCH_SUFFIXES)
  return any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES)


def read_config(directory: str | os.PathLike, **overrides) -> T5EncoderConfig:
  """The encoder config from a HF checkpoint directory's `config.json`."""
  path = os.path.join(os.fspath(directory), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json; pass the encoder config explicitly.")
  with open(path) as f:
    return T5EncoderConfig.from_hf_config(json.load(f), **overrides)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{parameter name: array} of a HF checkpoint directory or weights file (lazy for safetensors)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    for name in WEIGHT_FILES:
      if os.path.exists(os.path.join(path, name)):
        return read_arrays(os.path.join(path, name))
    raise FileNotFoundError(f"{path}: no HF weights ({', '.join(WEIGHT_FILES)}).")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file.")
  if path.endswith(".index.json"):
    with open(path) as f:
      weight_map = json.load(f)["weight_map"]
    arrays: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
      arrays.update(read_arrays(os.path.join(os.path.dirname(path), shard)))
    return arrays
  if path.endswith(".safetensors"):
    return safetensors_io.load(path)
  if path.endswith(TORCH_SUFFIXES):
    return _read_torch(path)
  raise ValueError(f"{path}: unknown checkpoint file type (want .safetensors, .bin, .pt, .pth).")


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"{path}: reading a PyTorch state dict needs torch (pip install "
                      "torch==2.13.0, CPU build); or convert it to safetensors.") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
    for key in ("state_dict", "model", "module"):
      if isinstance(state.get(key), dict):
        state = state[key]
        break
  if not isinstance(state, dict):
    raise CheckpointConversionError(f"{path}: expected a state dict, got {type(state).__name__}.")
  out = {}
  for name, t in state.items():
    if not torch.is_tensor(t):
      continue
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
      out[name] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      out[name] = t.numpy()
  return out


def convert(arrays: Mapping[str, np.ndarray], cfg: T5EncoderConfig, where: str = "checkpoint"
            ) -> dict:
  """HF T5 parameter names -> T5Encoder pure-dict params (checked against `cfg`)."""
  r = Reader(arrays, where)
  d, h, k, f, inner = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff, cfg.inner_dim
  if r.has("encoder.block.0.layer.1.DenseReluDense.wi.weight"):
    raise CheckpointConversionError(
        f"{where}: parameter 'encoder.block.0.layer.1.DenseReluDense.wi.weight' is a T5 v1.0 "
        "(ReLU, ungated) MLP; this encoder implements T5 v1.1 (wi_0/wi_1 gated GELU).")
  embed_key = "encoder.embed_tokens.weight" if r.has("encoder.embed_tokens.weight") else (
      "shared.weight")
  globals_ = {
      "token_embed": r.get(embed_key, (cfg.vocab_size, d)),
      "rel_bias": r.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        (cfg.num_buckets, h)),
      "final_norm/scale": r.get("encoder.final_layer_norm.weight", (d,)),
  }
  per_layer = []
  for i in range(cfg.num_layers):
    att, mlp = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
    per_layer.append({
        "attn_norm/scale": r.get(att + "layer_norm.weight", (d,)),
        "q": r.get(att + "SelfAttention.q.weight", (inner, d)).T.reshape(d, h, k),
        "k": r.get(att + "SelfAttention.k.weight", (inner, d)).T.reshape(d, h, k),
        "v": r.get(att + "SelfAttention.v.weight", (inner, d)).T.reshape(d, h, k),
        "o": r.get(att + "SelfAttention.o.weight", (d, inner)).T.reshape(h, k, d),
        "mlp_norm/scale": r.get(mlp + "layer_norm.weight", (d,)),
        "wi_0": r.get(mlp + "DenseReluDense.wi_0.weight", (f, d)).T,
        "wi_1": r.get(mlp + "DenseReluDense.wi_1.weight", (f, d)).T,
        "wo": r.get(mlp + "DenseReluDense.wo.weight", (d, f)).T,
    })
  r.check_no_extra(("encoder.",), ignore=lambda key: key == "encoder.embed_tokens.weight")
  return assemble(cfg, globals_, per_layer)


def load(path: str | os.PathLike, cfg: T5EncoderConfig | None = None) -> tuple[T5EncoderConfig,
                                                                               dict]:
  """(config, params) of a HF checkpoint; the config comes from config.json unless given."""
  path = os.fspath(path)
  if cfg is None:
    cfg = read_config(path if os.path.isdir(path) else os.path.dirname(path))
  return cfg, convert(read_arrays(path), cfg, where=path)


def to_hf_arrays(params: Mapping, cfg: T5EncoderConfig) -> dict[str, np.ndarray]:
  """T5Encoder pure-dict params -> HF `T5EncoderModel` state dict arrays (float32)."""
  p = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
  d, inner = cfg.d_model, cfg.inner_dim
  out = {"shared.weight": p["token_embed"],
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": p["rel_bias"],
         "encoder.final_layer_norm.weight": p["final_norm/scale"]}
  for i in range(cfg.num_layers):
    att, mlp = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
    out[att + "layer_norm.weight"] = p["layers/attn_norm/scale"][i]
    for name in ("q", "k", "v"):
      out[att + f"SelfAttention.{name}.weight"] = p[f"layers/{name}"][i].reshape(d, inner).T
    out[att + "SelfAttention.o.weight"] = p["layers/o"][i].reshape(inner, d).T
    out[mlp + "layer_norm.weight"] = p["layers/mlp_norm/scale"][i]
    out[mlp + "DenseReluDense.wi_0.weight"] = p["layers/wi_0"][i].T
    out[mlp + "DenseReluDense.wi_1.weight"] = p["layers/wi_1"][i].T
    out[mlp + "DenseReluDense.wo.weight"] = p["layers/wo"][i].T
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save(directory: str | os.PathLike, cfg: T5EncoderConfig, params: Mapping) -> None:
  """Writes `config.json` + `model.safetensors` in HF's T5EncoderModel layout."""
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  safetensors_io.save(os.path.join(directory, "model.safetensors"), to_hf_arrays(params, cfg))
  tmp = os.path.join(directory, ".config.json.tmp")
  with open(tmp, "w") as f:
    json.dump(cfg.to_hf_config(), f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(directory, "config.json"))


