"""T5 v1.1 encoder hyperparameters: a frozen dataclass, named presets, and HF `config.json` I/O.

VideoPoet conditions on frozen T5-XL encoder embeddings (paper 3.1). The presets are the public
t5-v1_1 sizes (google/t5-v1_1-{small,base,large,xl,xxl}; gated-GELU MLP, untied embeddings,
32 relative-position buckets up to distance 128); `demo` is the small encoder of the built-in demo.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

MAX_TEXT_TOKENS = 64  # paper 3.1: "up to a maximum of 64 text tokens"


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
  name: str = "custom"
  vocab_size: int = 32128
  d_model: int = 512
  num_heads: int = 6
  head_dim: int = 64            # HF `d_kv`; attention inner width is num_heads * head_dim
  d_ff: int = 1024
  num_layers: int = 8
  num_buckets: int = 32         # relative attention buckets (bidirectional: half per direction)
  max_distance: int = 128       # distances >= this share the last bucket
  eps: float = 1e-6             # T5LayerNorm epsilon
  dtype: str = "float32"        # compute dtype (norms and softmax stay float32)
  param_dtype: str = "float32"  # storage dtype of the weights ("bfloat16" halves XL's memory)
  remat_policy: str = "none"    # see vp_jax.nn.remat

  def __post_init__(self):
    for field in ("vocab_size", "d_model", "num_heads", "head_dim", "d_ff", "num_layers",
                  "num_buckets", "max_distance"):
      if getattr(self, field) <= 0:
        raise ValueError(f"T5EncoderConfig.{field} must be positive, got {getattr(self, field)}.")
    if self.num_buckets % 2:
      raise ValueError(f"T5EncoderConfig.num_buckets must be even (bidirectional), got "
                       f"{self.num_buckets}.")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in DTYPES:
        raise ValueError(f"T5EncoderConfig.{field}={getattr(self, field)!r}; known: "
                         f"{sorted(DTYPES)}.")

  @property
  def inner_dim(self) -> int:
    return self.num_heads * self.head_dim

  def num_params(self) -> int:
    """Parameters: embedding, layers (q, k, v, o, wi_0, wi_1, wo, 2 norms), rel. bias, norm."""
    d, f = self.d_model, self.d_ff
    per_layer = 4 * d * self.inner_dim + 3 * d * f + 2 * d
    return self.vocab_size * d + self.num_layers * per_layer + self.num_buckets * self.num_heads + d

  def to_hf_config(self) -> dict[str, Any]:
    """The HuggingFace `config.json` fields of an equivalent T5 v1.1 model."""
    return {
        "architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": self.vocab_size,
        "d_model": self.d_model, "d_kv": self.head_dim, "d_ff": self.d_ff,
        "num_layers": self.num_layers, "num_heads": self.num_heads,
        "relative_attention_num_buckets": self.num_buckets,
        "relative_attention_max_distance": self.max_distance, "layer_norm_epsilon": self.eps,
        "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
        "tie_word_embeddings": False, "dropout_rate": 0.0, "pad_token_id": 0,
        "eos_token_id": 1, "decoder_start_token_id": 0, "vp_jax_name": self.name,
    }

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], **overrides) -> "T5EncoderConfig":
    """Reads a HuggingFace T5 `config.json` dict; only gated-GELU (v1.1) encoders are supported."""
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in ("gated-gelu",):
      raise ValueError(f"config.json: feed_forward_proj={proj!r}; this encoder implements T5 v1.1 "
                       "(feed_forward_proj='gated-gelu', activation gelu_new).")
    act = hf.get("dense_act_fn", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
      raise ValueError(f"config.json: dense_act_fn={act!r}; expected the tanh GELU 'gelu_new'.")
    fields = dict(
        name=hf.get("vp_jax_name", hf.get("_name_or_path", "hf")) or "hf",
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], num_heads=hf["num_heads"],
        head_dim=hf["d_kv"], d_ff=hf["d_ff"], num_layers=hf["num_layers"],
        num_buckets=hf.get("relative_attention_num_buckets", 32),
        max_distance=hf.get("relative_attention_max_distance", 128),
        eps=hf.get("layer_norm_epsilon", 1e-6))
    fields.update(overrides)
    return cls(**fields)


PRESETS: dict[str, T5EncoderConfig] = {
    "t5-v1_1-small": T5EncoderConfig("t5-v1_1-small", d_model=512, num_heads=6, d_ff=1024,
                                     num_layers=8),
    "t5-v1_1-base": T5EncoderConfig("t5-v1_1-base", d_model=768, num_heads=12, d_ff=2048,
                                    num_layers=12),
    "t5-v1_1-large": T5EncoderConfig("t5-v1_1-large", d_model=1024, num_heads=16, d_ff=2816,
                                     num_layers=24),
    # The paper's text encoder (VideoPoet 3.1): T5-XL, 24 layers, width 2048, ~1.22B encoder params.
    "t5-v1_1-xl": T5EncoderConfig("t5-v1_1-xl", d_model=2048, num_heads=32, d_ff=5120,
                                  num_layers=24),
    "t5-v1_1-xxl": T5EncoderConfig("t5-v1_1-xxl", d_model=4096, num_heads=64, d_ff=10240,
                                   num_layers=24),
}


def get_config(name: str, **overrides) -> T5EncoderConfig:
  """A preset by name, with optional field overrides (e.g. dtype="bfloat16")."""
  if name not in PRESETS:
    raise ValueError(f"Unknown T5 encoder preset {name!r}; known: {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[name], **overrides)
