"""The T5 v1.1 encoder in Flax NNX: relative position buckets, RMS layer norm, gated-GELU MLP.

It follows the T5 / T5X / HuggingFace conventions exactly, so public checkpoints load unchanged:
no biases anywhere; no 1/sqrt(head_dim) on the attention logits (T5 folds it into the query
initialization); one relative-position bias table [buckets, heads] shared by all layers, added to
the logits together with the padding mask; pre-norm residual blocks with T5LayerNorm (x / rms(x) *
scale, no mean subtraction, no bias); MLP = wo(gelu_tanh(wi_0 x) * wi_1 x); a final norm. The layer
weights are stacked on a leading [num_layers] axis and applied with `lax.scan` (vp_jax's layout for
every deep model). Dropout is absent: VideoPoet uses the encoder frozen.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.nn import layers, remat
from vp_jax.parallel.sharding import constrain
from vp_jax.text.config import DTYPES, T5EncoderConfig

_MASK_VALUE = -1e9  # added to logits of padded keys (softmax weight underflows to exactly 0)


def relative_position_bucket(relative_position: np.ndarray, *, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
  """T5's bucket of each relative position (memory - query), in [0, num_buckets).

  Bidirectional: half of the buckets for keys after the query (relative position > 0). In each
  half, distances below num_buckets/4 get their own bucket; larger ones share logarithmically wider
  buckets up to `max_distance`, beyond which everything falls in the last bucket. Computed in numpy
  float32 like HF transformers and T5X (the lengths are static, so this is a trace-time constant).
  """
  rp = np.asarray(relative_position, dtype=np.int64)
  buckets = np.zeros_like(rp)
  if bidirectional:
    num_buckets //= 2
    buckets += (rp > 0).astype(np.int64) * num_buckets
    n = np.abs(rp)
  else:
    n = np.maximum(-rp, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  safe = np.maximum(n, 1).astype(np.float32)
  scaled = (np.log(safe / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact))
  if_large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
  return buckets + np.where(is_small, n, if_large)


def _init(stddev: float, pdt, axes):
  """Normal(stddev) initializer (T5's scheme) stored in `pdt`, annotated with logical `axes`."""
  def init(key, shape, dtype=jnp.float32):
    del dtype
    return (stddev * jax.random.normal(key, shape, jnp.float32)).astype(pdt)
  return nnx.with_partitioning(init, axes)


class T5Layer(nnx.Module):
  """One encoder block: x + attn(norm(x)); x + mlp(norm(x))."""

  def __init__(self, cfg: T5EncoderConfig, *, rngs: nnx.Rngs):
    d, h, k, f = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff
    pdt, dt = DTYPES[cfg.param_dtype], DTYPES[cfg.dtype]
    self.cfg = cfg
    self.attn_norm = layers.RMSNorm(d, eps=cfg.eps, dtype=dt)
    # HF/T5X initialization: the 1/sqrt(head_dim) logit scale lives in the query's init.
    std = init_stddevs(cfg)
    self.q = nnx.Param(_init(std["layers/q"], pdt, ("embed", "heads", "kv"))(rngs.params(),
                                                                             (d, h, k)))
    self.k = nnx.Param(_init(std["layers/k"], pdt, ("embed", "heads", "kv"))(rngs.params(),
                                                                             (d, h, k)))
    self.v = nnx.Param(_init(std["layers/v"], pdt, ("embed", "heads", "kv"))(rngs.params(),
                                                                             (d, h, k)))
    self.o = nnx.Param(_init(std["layers/o"], pdt, ("heads", "kv", "embed"))(rngs.params(),
                                                                             (h, k, d)))
    self.mlp_norm = layers.RMSNorm(d, eps=cfg.eps, dtype=dt)
    self.wi_0 = nnx.Param(_init(std["layers/wi_0"], pdt, ("embed", "mlp"))(rngs.params(), (d, f)))
    self.wi_1 = nnx.Param(_init(std["layers/wi_1"], pdt, ("embed", "mlp"))(rngs.params(), (d, f)))
    self.wo = nnx.Param(_init(std["layers/wo"], pdt, ("mlp", "embed"))(rngs.params(), (f, d)))

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    """x [B, L, D] (compute dtype), bias [B, H, L, L] float32 (relative positions + padding)."""
    dt = DTYPES[self.cfg.dtype]
    h = self.attn_norm(x)
    q = jnp.einsum("bld,dhk->blhk", h, self.q[...].astype(dt))   # [B, L, H, K]
    k = jnp.einsum("bld,dhk->blhk", h, self.k[...].astype(dt))
    v = jnp.einsum("bld,dhk->blhk", h, self.v[...].astype(dt))
    q = constrain(q, ("batch", "length", "act_heads", None))
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32) + bias  # no 1/sqrt(K)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    attn = jnp.einsum("bhqs,bshk->bqhk", probs, v)                  # [B, L, H, K]
    x = x + jnp.einsum("bqhk,hkd->bqd", attn, self.o[...].astype(dt))
    x = constrain(x, ("batch", "length", "act_embed"))
    h = self.mlp_norm(x)
    gate = jax.nn.gelu(h @ self.wi_0[...].astype(dt), approximate=True)  # HF "gelu_new"
    hidden = constrain(gate * (h @ self.wi_1[...].astype(dt)), ("batch", "length", "act_mlp"))
    x = x + hidden @ self.wo[...].astype(dt)
    return constrain(x, ("batch", "length", "act_embed"))


class T5Encoder(nnx.Module):
  """ids [B, L] int32 + mask [B, L] bool -> last hidden states [B, L, D] (HF last_hidden_state)."""

  def __init__(self, cfg: T5EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pdt, dt = DTYPES[cfg.param_dtype], DTYPES[cfg.dtype]
    std = init_stddevs(cfg)
    self.token_embed = nnx.Param(_init(std["token_embed"], pdt, ("vocab", "embed"))(
        rngs.params(), (cfg.vocab_size, cfg.d_model)))
    # One table shared by all layers (HF keeps it in block 0, T5X in encoder/relpos_bias).
    self.rel_bias = nnx.Param(_init(std["rel_bias"], pdt, (None, "heads"))(
        rngs.params(), (cfg.num_buckets, cfg.num_heads)))

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> T5Layer:
      return T5Layer(cfg, rngs=rngs)

    self.layers = make_layers(rngs)  # parameters stacked on a leading [num_layers] axis
    self.final_norm = layers.RMSNorm(cfg.d_model, eps=cfg.eps, dtype=dt)

  def position_bias(self, length: int) -> jax.Array:
    """[H, L, L] float32 relative-position bias for a length-L bidirectional self-attention."""
    pos = np.arange(length)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None],
                                       num_buckets=self.cfg.num_buckets,
                                       max_distance=self.cfg.max_distance)   # [L, L]
    table = self.rel_bias[...].astype(jnp.float32)                           # [NB, H]
    return jnp.transpose(jnp.take(table, jnp.asarray(buckets), axis=0), (2, 0, 1))

  def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    cfg, dt = self.cfg, DTYPES[self.cfg.dtype]
    if ids.ndim != 2:
      raise ValueError(f"T5Encoder: ids must be [batch, length], got shape {ids.shape}.")
    if mask is None:
      mask = jnp.ones(ids.shape, bool)
    length = ids.shape[1]
    x = jnp.take(self.token_embed[...], ids, axis=0).astype(dt)                # [B, L, D]
    x = constrain(x, ("batch", "length", "act_embed"))
    pad = jnp.where(mask, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None, None, :]  # [B,1,1,L]
    bias = self.position_bias(length)[None] + pad                             # [B, H, L, L]
    graphdef, stacked = nnx.split(self.layers)

    def body(x, layer_state):
      return nnx.merge(graphdef, layer_state)(x, bias), None

    x, _ = jax.lax.scan(remat.remat(body, cfg.remat_policy), x, stacked)
    return self.final_norm(x)


def init_stddevs(cfg: T5EncoderConfig) -> dict[str, float]:
  """T5's (HF `_init_weights`, T5X) normal init scale of each weight; norm scales start at 1.

  The query's extra 1/sqrt(head_dim) is the attention logit scale T5 never applies at run time.
  """
  d, k, f = cfg.d_model, cfg.head_dim, cfg.d_ff
  return {"token_embed": 1.0, "rel_bias": d ** -0.5, "layers/q": (d * k) ** -0.5,
          "layers/k": d ** -0.5, "layers/v": d ** -0.5, "layers/o": cfg.inner_dim ** -0.5,
          "layers/wi_0": d ** -0.5, "layers/wi_1": d ** -0.5, "layers/wo": f ** -0.5}


def init_params(cfg: T5EncoderConfig, seed: int = 0) -> dict:
  """Randomly initialized parameters (T5's scheme) as a pure dict of host numpy arrays.

  Drawn with numpy (seeded, platform independent, instant; compiling a jax init of the stacked
  model takes ~10 s on CPU); `TextEncoder` places the arrays onto the mesh.
  """
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))
  shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  stds = init_stddevs(cfg)
  rng = np.random.default_rng(seed)
  pdt = np.dtype(DTYPES[cfg.param_dtype])

  def make(path, leaf):
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    if name.endswith("scale"):
      return np.ones(leaf.shape, pdt)
    return (stds[name] * rng.standard_normal(leaf.shape, np.float32)).astype(pdt)
  return jax.tree_util.tree_map_with_path(make, shapes)


def apply_fn(cfg: T5EncoderConfig):
  """A pure function `(params, ids [B, L], mask [B, L]) -> hidden [B, L, D]` over pure-dict params
  (for jit / pjit; the module is rebuilt from its abstract structure, nothing is initialized)."""
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))
  graphdef, template = nnx.split(abstract, nnx.Param)

  def apply(params, ids, mask):
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)(ids, mask)
  return apply
