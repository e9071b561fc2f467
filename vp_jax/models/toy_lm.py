"""A small causal transformer LM: the trainer's reference model, the pre-LM demo and the MFU benchmark.

It is deliberately plain (learned positions, pre-norm blocks, GELU MLP) so that trainer tests and the
MFU benchmark measure the framework, not model features; the VideoPoet prefix LM lives in its own
module. Layers are stacked and applied with `lax.scan` under a configurable remat policy, the layout
every large model in vp_jax uses.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models import registry
from vp_jax.nn import layers, remat
from vp_jax.parallel.sharding import constrain

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ToyLMConfig:
  vocab_size: int = 256
  max_len: int = 64
  num_layers: int = 2
  embed_dim: int = 64
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  dtype: str = "float32"        # activation/compute dtype; parameters stay float32
  remat_policy: str = "none"    # see vp_jax.nn.remat

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  def num_params(self) -> int:
    d, f, v = self.embed_dim, self.mlp_dim, self.vocab_size
    per_layer = 4 * d * d + 2 * d * f + 2 * d
    return v * d + self.max_len * d + self.num_layers * per_layer + d + d * v

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 x layers x length x width (attention)."""
    d, f, v = self.embed_dim, self.mlp_dim, self.vocab_size
    matmul_params = self.num_layers * (4 * d * d + 2 * d * f) + d * v
    return 6 * matmul_params + 12 * self.num_layers * seq_len * d


PRESETS = {
    "tiny": ToyLMConfig(),
    "bench": ToyLMConfig(vocab_size=1024, max_len=256, num_layers=4, embed_dim=512, num_heads=8,
                         mlp_dim=2048),
}


class Block(nnx.Module):
  """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

  def __init__(self, cfg: ToyLMConfig, *, rngs: nnx.Rngs):
    dt = DTYPES[cfg.dtype]
    d, h, k = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    self.cfg = cfg
    self.attn_norm = layers.RMSNorm(d, dtype=dt)
    self.qkv = nnx.Param(nnx.with_partitioning(layers.default_kernel_init,
                                               ("embed", None, "heads", "kv"))(
        rngs.params(), (d, 3, h, k), jnp.float32))
    self.out = nnx.Param(nnx.with_partitioning(layers.default_kernel_init, ("heads", "kv", "embed"))(
        rngs.params(), (h, k, d), jnp.float32))
    self.mlp_norm = layers.RMSNorm(d, dtype=dt)
    self.mlp_in = layers.Dense(d, cfg.mlp_dim, ("embed", "mlp"), dtype=dt, rngs=rngs)
    self.mlp_out = layers.Dense(cfg.mlp_dim, d, ("mlp", "embed"), dtype=dt, rngs=rngs)

  def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:  # [B, L, D]
    cfg, dt = self.cfg, DTYPES[self.cfg.dtype]
    h = self.attn_norm(x)
    qkv = jnp.einsum("bld,dthk->blthk", h, self.qkv[...].astype(dt))  # [B, L, 3, H, K]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = constrain(q, ("batch", "length", "act_heads", None))
    length = x.shape[1]
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32) / jnp.sqrt(cfg.head_dim)
    causal = jnp.tril(jnp.ones((length, length), bool))
    probs = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1).astype(dt)
    attn = jnp.einsum("bhqs,bshk->bqhk", probs, v)
    attn = jnp.einsum("bqhk,hkd->bqd", attn, self.out[...].astype(dt))
    x = x + layers.dropout(attn, key, cfg.dropout, 0)
    x = constrain(x, ("batch", "length", "act_embed"))
    h = self.mlp_in(self.mlp_norm(x))
    h = constrain(jax.nn.gelu(h), ("batch", "length", "act_mlp"))
    x = x + layers.dropout(self.mlp_out(h), key, cfg.dropout, 1)
    return constrain(x, ("batch", "length", "act_embed"))


class ToyLM(nnx.Module):
  """Causal LM over `inputs` -> next-token logits; loss on `targets` where `loss_mask` is set."""

  def __init__(self, cfg: ToyLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = DTYPES[cfg.dtype]
    self.embed = layers.Embed(cfg.vocab_size, cfg.embed_dim, dtype=dt, rngs=rngs)
    self.pos_embed = nnx.Param(nnx.with_partitioning(nnx.initializers.normal(0.02),
                                                     (None, "embed"))(
        rngs.params(), (cfg.max_len, cfg.embed_dim), jnp.float32))

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> Block:
      return Block(cfg, rngs=rngs)

    self.layers = make_layers(rngs)   # parameters stacked on a leading [num_layers] axis
    self.final_norm = layers.RMSNorm(cfg.embed_dim, dtype=dt)
    self.unembed = layers.Dense(cfg.embed_dim, cfg.vocab_size, ("embed", "vocab"), dtype=dt,
                                rngs=rngs)

  def __call__(self, ids: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """[B, L] int ids -> [B, L, V] float32 logits. `key` enables dropout."""
    cfg = self.cfg
    length = ids.shape[1]
    if length > cfg.max_len:
      raise ValueError(f"ToyLM: sequence length {length} exceeds max_len {cfg.max_len}.")
    x = self.embed(ids) + self.pos_embed[:length].astype(DTYPES[cfg.dtype])[None]
    x = constrain(x, ("batch", "length", "act_embed"))
    graphdef, stacked = nnx.split(self.layers)
    layer_keys = (None if key is None else jax.random.split(key, cfg.num_layers))

    def body(x, xs):
      layer_state, layer_key = xs
      return nnx.merge(graphdef, layer_state)(x, layer_key), None

    x, _ = jax.lax.scan(remat.remat(body, cfg.remat_policy), x, (stacked, layer_keys))
    logits = self.unembed(self.final_norm(x)).astype(jnp.float32)
    return constrain(logits, ("batch", "length", "act_vocab"))

  def loss(self, batch: dict[str, jax.Array], *, key: jax.Array, train: bool,
           group: str = "model") -> tuple[jax.Array, dict[str, Any]]:
    """Mean next-token cross-entropy over masked positions. batch: inputs/targets/loss_mask [B, L]."""
    del group
    logits = self(batch["inputs"], key=key if train else None)
    mask = batch.get("loss_mask", jnp.ones_like(batch["targets"])).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    tokens = jnp.maximum(mask.sum(), 1.0)
    loss = (nll * mask).sum() / tokens
    accuracy = ((logits.argmax(-1) == batch["targets"]) * mask).sum() / tokens
    return loss, {"accuracy": accuracy, "tokens": mask.sum()}


registry.register(ToyLMConfig, ToyLM)
