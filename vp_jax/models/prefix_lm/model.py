"""The VideoPoet prefix LM (paper 3.2): a decoder-only transformer over the unified vocabulary,
bidirectional over the prefix (the task's inputs) and causal over the outputs, with T5 text
embeddings linearly projected into the positions the layout reserves for them.

Batch format (what the seqio tasks produce and the trainer feeds):

    tokens          int32 [B, L]     unified ids; text positions hold Special.TEXT_SLOT
    prefix_length   int32 [B]        positions < prefix_length attend bidirectionally
    loss_mask       bool  [B, L]     True where the token is an output (predicted from the left)
    text_embeddings float [B, T, Dt] T5 encoder outputs, consumed in order by the TEXT_SLOT positions
    text_mask       bool  [B, T]     True for real text tokens; False slots are never attended

Layers are stacked and scanned (`nnx.vmap` init, `lax.scan` apply) under a remat policy from config.
Generation uses `prefill` (the prefix once, bidirectionally) then `decode_step` per token with a
KV cache `{k: N x [B*G, K, S], v: N x [B*G, S, K], key_valid: [B, S], index: int32 []}` (one
array per layer, in the layout attention.py explains) and the layers' parameters sliced out of the
stack once (`decode_layers`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vp_jax.models import registry
from vp_jax.models.prefix_lm.attention import Attention, prefix_lm_mask
from vp_jax.models.prefix_lm.config import PrefixLMConfig
from vp_jax.nn import layers, remat
from vp_jax.nn.cross_entropy import cross_entropy_sums
from vp_jax.parallel.sharding import constrain
from vp_jax.sequence.vocab import Special

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
Cache = dict[str, jax.Array]


class Block(nnx.Module):
  """Pre-norm block: x + attn(norm(x)); x + SwiGLU(norm(x))."""

  def __init__(self, cfg: PrefixLMConfig, *, rngs: nnx.Rngs):
    dt = DTYPES[cfg.dtype]
    d, f = cfg.embed_dim, cfg.mlp_dim
    self.cfg = cfg
    self.attn_norm = layers.RMSNorm(d, dtype=dt)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = layers.RMSNorm(d, dtype=dt)
    self.mlp_gate = layers.Dense(d, f, ("embed", "mlp"), dtype=dt, rngs=rngs)
    self.mlp_up = layers.Dense(d, f, ("embed", "mlp"), dtype=dt, rngs=rngs)
    self.mlp_out = layers.Dense(f, d, ("mlp", "embed"), dtype=dt, rngs=rngs)

  def finish(self, x: jax.Array, attn_out: jax.Array, key: jax.Array | None) -> jax.Array:
    """Residual of the attention output, then the MLP. x, attn_out [B, L, D]."""
    rate = self.cfg.dropout
    x = constrain(x + layers.dropout(attn_out, key, rate, 0), ("batch", "length", "act_embed"))
    h = self.mlp_norm(x)
    h = constrain(jax.nn.silu(self.mlp_gate(h)) * self.mlp_up(h), ("batch", "length", "act_mlp"))
    x = x + layers.dropout(self.mlp_out(h), key, rate, 1)
    return constrain(x, ("batch", "length", "act_embed"))

  def __call__(self, x, positions, mask, key):
    """x [B, L, D] -> (x, (k, v) [B, G, L, K]) with every query attending by `mask` [B, L, L]."""
    q, k, v = self.attn.project(self.attn_norm(x), positions)
    return self.finish(x, self.attn.attend(q, k, v, mask), key), (k, v)


class PrefixLM(nnx.Module):
  """VideoPoet's decoder-only prefix LM over the unified vocabulary: bidirectional attention over
  the prefix (conditions), causal over the outputs; T5 text embeddings projected into TEXT_SLOT
  positions; layers stacked on a [num_layers] axis (scanned). Training: `loss`; sampling:
  `prefill` then `decode_step` with a KV cache."""

  def __init__(self, cfg: PrefixLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = DTYPES[cfg.dtype]
    d = cfg.embed_dim
    self.embed = layers.Embed(cfg.vocab_size, d, dtype=dt, init_std=d ** -0.5, rngs=rngs)
    self.text_proj = layers.Dense(cfg.text_dim, d, (None, "embed"), dtype=dt, rngs=rngs)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> Block:
      return Block(cfg, rngs=rngs)

    self.layers = make_layers(rngs)        # parameters stacked on a leading [num_layers] axis
    self.final_norm = layers.RMSNorm(d, dtype=dt)
    if not cfg.tie_embeddings:
      self.unembed = layers.Dense(d, cfg.vocab_size, ("embed", "vocab"), dtype=dt, rngs=rngs)

  # -- pieces -----------------------------------------------------------------------------------
  def embed_inputs(self, tokens: jax.Array, text: jax.Array | None,
                   text_mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """tokens [B, L] -> (x [B, L, D], key_valid bool [B, L]).

    TEXT_SLOT positions take the projected text embeddings in order (the n-th slot of a row takes
    text[:, n]); padding, text slots whose text_mask is False and slots past text's length (they
    keep the TEXT_SLOT token's own embedding) are not valid keys."""
    cfg = self.cfg
    x = self.embed(tokens) * jnp.asarray(cfg.embed_dim ** 0.5, self.embed.dtype)
    valid = tokens != Special.PAD
    is_text = tokens == Special.TEXT_SLOT
    if text is None:
      valid &= ~is_text
    else:
      index = jnp.cumsum(is_text, axis=1) - 1                                    # [B, L]
      filled = is_text & (index < text.shape[1])
      valid &= ~is_text | filled
      slot = jnp.clip(index, 0, text.shape[1] - 1)
      projected = self.text_proj(text)                                           # [B, T, D]
      x = jnp.where(filled[..., None],
                    jnp.take_along_axis(projected, slot[..., None], axis=1), x)
      if text_mask is not None:
        valid &= ~is_text | jnp.take_along_axis(text_mask.astype(bool), slot, axis=1)
    return constrain(x, ("batch", "length", "act_embed")), valid

  def project_logits(self, hidden: jax.Array) -> jax.Array:
    """[..., D] final hidden states -> [..., V] logits (compute dtype)."""
    if self.cfg.tie_embeddings:
      return self.embed.attend(hidden)
    return self.unembed(hidden)

  def _layer_keys(self, key):
    return None if key is None else jax.random.split(key, self.cfg.num_layers)

  # -- forward ----------------------------------------------------------------------------------
  def __call__(self, tokens: jax.Array, *, prefix_length: jax.Array,
               text: jax.Array | None = None, text_mask: jax.Array | None = None,
               key: jax.Array | None = None) -> jax.Array:
    """tokens [B, L], prefix_length [B] -> final hidden states [B, L, D]. `key` enables dropout."""
    hidden, _ = self._forward(tokens, prefix_length, text, text_mask, key, keep_kv=False)
    return hidden

  def _forward(self, tokens, prefix_length, text, text_mask, key, keep_kv: bool):
    cfg = self.cfg
    b, length = tokens.shape
    x, valid = self.embed_inputs(tokens, text, text_mask)
    mask = prefix_lm_mask(length, jnp.broadcast_to(prefix_length, (b,)), valid)
    positions = jnp.broadcast_to(jnp.arange(length), (b, length))
    graphdef, stacked = nnx.split(self.layers)

    def body(x, xs):
      layer_state, layer_key = xs
      x, kv = nnx.merge(graphdef, layer_state)(x, positions, mask, layer_key)
      return x, (kv if keep_kv else None)

    x, kv = jax.lax.scan(remat.remat(body, cfg.remat_policy), x,
                         (stacked, self._layer_keys(key)))
    return self.final_norm(x), (kv, valid)

  def logits(self, tokens, *, prefix_length, text=None, text_mask=None) -> jax.Array:
    """Full float32 logits [B, L, V] (for tests and small inputs; training uses the chunked loss)."""
    hidden = self(tokens, prefix_length=prefix_length, text=text, text_mask=text_mask)
    return constrain(self.project_logits(hidden).astype(jnp.float32),
                     ("batch", "length", "act_vocab"))

  # -- training ---------------------------------------------------------------------------------
  def loss(self, batch: dict[str, jax.Array], *, key: jax.Array, train: bool,
           group: str = "model") -> tuple[jax.Array, dict[str, Any]]:
    """Mean next-token cross-entropy over output positions (+ z-loss). In training, the text
    condition of each example is dropped with probability `cond_dropout`."""
    del group
    cfg = self.cfg
    tokens = batch["tokens"]
    text, text_mask = batch.get("text_embeddings"), batch.get("text_mask")
    if train and text is not None and cfg.cond_dropout > 0:
      keep = ~jax.random.bernoulli(jax.random.fold_in(key, 7), cfg.cond_dropout,
                                   (tokens.shape[0], 1))
      text_mask = keep if text_mask is None else text_mask.astype(bool) & keep
    hidden = self(tokens, prefix_length=batch["prefix_length"], text=text, text_mask=text_mask,
                  key=key if train else None)
    weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
    sums = cross_entropy_sums(hidden[:, :-1], tokens[:, 1:], weights, self.project_logits,
                              cfg.loss_chunk_length)
    count = jnp.maximum(sums["weight"], 1.0)
    nll = sums["nll"] / count
    loss = nll + cfg.z_loss * sums["z"] / count
    return loss, {"nll": nll, "accuracy": sums["correct"] / count, "tokens": sums["weight"],
                  "log_z_sq": sums["z"] / count,
                  # PAD positions / positions: 0 with AGD batches (vp_jax.data.agd).
                  "padding_ratio": jnp.mean((tokens == Special.PAD).astype(jnp.float32))}

  # -- generation -------------------------------------------------------------------------------
  def prefill(self, tokens: jax.Array, *, cache_length: int, text: jax.Array | None = None,
              text_mask: jax.Array | None = None) -> tuple[jax.Array, Cache]:
    """Runs the whole prefix tokens [B, P] bidirectionally once. Returns the float32 logits of the
    last prefix position [B, V] (the first output's distribution) and a KV cache with room for
    `cache_length` >= P positions."""
    b, p = tokens.shape
    if cache_length < p:
      raise ValueError(f"prefill: cache_length={cache_length} < prefix length {p}.")
    hidden, ((k, v), valid) = self._forward(tokens, jnp.full((b,), p, jnp.int32), text, text_mask,
                                            None, keep_kv=True)             # k, v [N, B, G, P, K]
    grow = cache_length - p
    n, _, g, _, kd = k.shape
    keys = jnp.pad(jnp.swapaxes(k, 3, 4).reshape(n, b * g, kd, p),
                   ((0, 0), (0, 0), (0, 0), (0, grow)))                     # [N, B*G, K, S]
    values = jnp.pad(v.reshape(n, b * g, p, kd), ((0, 0), (0, 0), (0, grow), (0, 0)))
    axes = ("batch", None, None)
    cache = {"k": tuple(constrain(keys[i], axes) for i in range(n)),
             "v": tuple(constrain(values[i], axes) for i in range(n)),           # [B*G, S, K]
             "key_valid": jnp.pad(valid, ((0, 0), (0, grow))),                # [B, S]
             "index": jnp.asarray(p, jnp.int32)}
    logits = self.project_logits(hidden[:, -1]).astype(jnp.float32)          # [B, V]
    return logits, cache

  def decode_layers(self) -> list[nnx.State]:
    """Each layer's parameters, sliced out of the stacked [num_layers, ...] arrays, for
    `decode_step`. Call it once per generation, outside the token loop: a decode step reads every
    weight once, and slicing the stack inside the step makes XLA copy each layer's weights (and a
    scan does the same to the cache) on every token, which cost 2-3x the step's own work at batch
    1 on CPU."""
    _, stacked = nnx.split(self.layers)
    return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.cfg.num_layers)]

  def decode_step(self, token: jax.Array, cache: Cache,
                  layers: list[nnx.State]) -> tuple[jax.Array, Cache]:
    """Appends token [B] at position cache["index"] (causal: it sees the cache and itself), with
    `layers` from `decode_layers`. Returns the float32 logits of the next position [B, V] and the
    updated cache.

    Each layer writes its new key/value into its cache array first and then attends over it, so
    with the cache donated the write is in place and the attention reads the cache once; the
    step touches O(1) cache positions besides the keys it attends to."""
    b = token.shape[0]
    index = cache["index"]
    x, valid = self.embed_inputs(token[:, None], None, None)                 # [B, 1, D]
    key_valid = jax.lax.dynamic_update_slice(cache["key_valid"], valid, (0, index))   # [B, S]
    s = key_valid.shape[1]
    mask = (key_valid & (jnp.arange(s) <= index)[None])[:, None, :]         # [B, 1, S]
    positions = jnp.full((b, 1), index, jnp.int32)
    graphdef = nnx.graphdef(self.layers)
    keys, values = [], []
    for layer_state, kc, vc in zip(layers, cache["k"], cache["v"], strict=True):
      block = nnx.merge(graphdef, layer_state)
      q, k, v = block.attn.project(block.attn_norm(x), positions)           # k, v [B, G, 1, K]
      n, kd = kc.shape[0], kc.shape[1]
      kc = jax.lax.dynamic_update_slice(kc, k.reshape(n, kd, 1).astype(kc.dtype), (0, 0, index))
      vc = jax.lax.dynamic_update_slice(vc, v.reshape(n, 1, kd).astype(vc.dtype), (0, index, 0))
      x = block.finish(x, block.attn.attend_cache(q, kc, vc, mask), None)
      keys.append(kc)
      values.append(vc)
    new_cache = {"k": tuple(keys), "v": tuple(values), "key_valid": key_valid, "index": index + 1}
    logits = self.project_logits(self.final_norm(x)[:, 0]).astype(jnp.float32)
    return logits, new_cache


registry.register(PrefixLMConfig, PrefixLM)
