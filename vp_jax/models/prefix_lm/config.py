"""Hyperparameters of the VideoPoet prefix LM, with named presets from CPU-sized to 8B.

The paper gives the model sizes (300M, 1B, 8B) and the vocabulary, not the shapes; the presets use
a Llama-style decoder (RMSNorm, rotary positions, SwiGLU, grouped-query attention at 8B) with the
input embedding tied to the output layer. The ~266k-id vocabulary dominates small models: tying
keeps the 300M preset at 300M instead of spending 400M on two copies of the table. Parameter counts
(`num_params`, equal to the allocated count; tests check it with `jax.eval_shape`):

    tiny  2.6M  (tests)      cpu   7.0M  (demo)       bench 20.4M (MFU benchmark)
    300m  306M               1b    985M               8b    8.07B
"""
from __future__ import annotations

import dataclasses

from vp_jax.sequence.vocab import PAPER, Vocabulary

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class PrefixLMConfig:
  vocab: Vocabulary = PAPER
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int | None = None     # grouped-query attention when < num_heads; None = num_heads
  head_dim: int | None = None         # None = embed_dim // num_heads
  mlp_dim: int = 512                  # SwiGLU hidden width
  text_dim: int = 2048                # T5-XL encoder width (paper 3.1)
  rope_base: float = 10_000.0
  tie_embeddings: bool = True
  dtype: str = "float32"              # activation/compute dtype; parameters stay float32
  remat_policy: str = "none"          # see vp_jax.nn.remat
  dropout: float = 0.0
  # Probability, per training example, of dropping the text condition (its slots are masked out
  # of attention) so that classifier-free guidance has an unconditional model to contrast with.
  cond_dropout: float = 0.1
  # The loss computes logits `loss_chunk_length` positions at a time (all rows), each chunk under
  # jax.checkpoint, so neither the forward nor the backward pass holds [B, L, V] float32 logits.
  # 0 computes the full logits at once (the naive reference).
  loss_chunk_length: int = 128
  z_loss: float = 0.0                 # weight of log(Z)^2 (PaLM), keeps the softmax normalizer near 1

  def __post_init__(self):
    if self.embed_dim < 1 or self.num_layers < 1 or self.num_heads < 1 or self.mlp_dim < 1:
      raise ValueError(f"PrefixLMConfig: sizes must be >= 1, got {self}.")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"PrefixLMConfig: num_heads={self.num_heads} must be a multiple of "
                       f"num_kv_heads={self.kv_heads}.")
    if self.head_dim is None and self.embed_dim % self.num_heads:
      raise ValueError(f"PrefixLMConfig: embed_dim={self.embed_dim} is not divisible by "
                       f"num_heads={self.num_heads}; set head_dim.")
    if self.dtype not in DTYPES:
      raise ValueError(f"PrefixLMConfig.dtype={self.dtype!r}; known: {DTYPES}.")
    if not 0.0 <= self.cond_dropout <= 1.0 or not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"PrefixLMConfig: cond_dropout={self.cond_dropout} must be in [0, 1] and "
                       f"dropout={self.dropout} in [0, 1).")
    if self.loss_chunk_length < 0 or self.z_loss < 0:
      raise ValueError("PrefixLMConfig: loss_chunk_length and z_loss must be >= 0.")
    if self.rope_dim % 2:
      raise ValueError(f"PrefixLMConfig: head_dim={self.rope_dim} must be even for rotary "
                       "positions.")

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def rope_dim(self) -> int:
    return self.head_dim or self.embed_dim // self.num_heads

  @property
  def vocab_size(self) -> int:
    return self.vocab.size

  def num_params(self) -> int:
    d, f, k = self.embed_dim, self.mlp_dim, self.rope_dim
    attn = d * self.num_heads * k * 2 + d * self.kv_heads * k * 2
    per_layer = attn + 3 * d * f + 2 * d
    table = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return table + self.text_dim * d + self.num_layers * per_layer + d

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul weights (the output layer included) + attention
    (12 x layers x length x heads x head_dim, the causal/prefix mask not discounted)."""
    d, f, k = self.embed_dim, self.mlp_dim, self.rope_dim
    matmul = self.num_layers * (d * self.num_heads * k * 2 + d * self.kv_heads * k * 2 + 3 * d * f)
    matmul += d * self.vocab_size
    return 6 * matmul + 12 * self.num_layers * seq_len * self.num_heads * k


# A vocabulary for CPU-sized runs: the paper's layout with a 2^10-code LFQ (10 bits) and 4 x 256
# audio codes, so the output layer does not dominate a small model.
SMALL_VOCAB = Vocabulary(visual_codes=2 ** 10, audio_levels=4, audio_codes_per_level=256)

PRESETS: dict[str, PrefixLMConfig] = {
    "tiny": PrefixLMConfig(vocab=SMALL_VOCAB, embed_dim=64, num_layers=2, num_heads=4,
                           num_kv_heads=2, mlp_dim=256, text_dim=32),
    "cpu": PrefixLMConfig(vocab=SMALL_VOCAB, embed_dim=256, num_layers=4, num_heads=4,
                          mlp_dim=1024, text_dim=64),
    "bench": PrefixLMConfig(vocab=SMALL_VOCAB, embed_dim=512, num_layers=4, num_heads=8,
                            mlp_dim=2048, text_dim=64),
    "300m": PrefixLMConfig(embed_dim=768, num_layers=14, num_heads=12, mlp_dim=2048,
                           remat_policy="dots_no_batch"),
    "1b": PrefixLMConfig(embed_dim=1536, num_layers=20, num_heads=12, mlp_dim=4096,
                         remat_policy="dots_no_batch"),
    "8b": PrefixLMConfig(embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                         mlp_dim=14336, dtype="bfloat16", remat_policy="dots_no_batch"),
}


def preset(name: str, **overrides) -> PrefixLMConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown PrefixLM preset {name!r}; known: {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[name], **overrides)
