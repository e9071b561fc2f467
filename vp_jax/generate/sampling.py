"""Autoregressive sampling from the prefix LM with a KV cache and classifier-free guidance.

The prefix (task inputs, format tokens, the first output's begin token) is run once,
bidirectionally (`PrefixLM.prefill`); each output token then costs one `decode_step` over the
cache. At output position i only ids in [lo[i], hi[i]) may be sampled (from `Layout.legal_ranges`:
visual ids inside a video output, the right RVQ level's range inside audio, the exact id at
special positions); a row stops after it emits one of the layout's stop tokens (its later positions
get the layout's forced tokens, such as `<eos>` after `<eov_o>`, or PAD), and the loop ends when
every row has stopped or the layout's length is reached.

Classifier-free guidance runs the conditional and the unconditional rows in one batch: the
unconditional copy of each row has its text slots masked out (the same "dropped condition" the
model saw in training, `PrefixLMConfig.cond_dropout`), and the next-token logits are
uncond + scale * (cond - uncond); both copies then take the same sampled token. The guidance scale
and temperature are traced values (no recompilation per call); top-k is static.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vp_jax.parallel.rules import LogicalRules
from vp_jax.parallel.sharding import batch_sharding, state_shardings
from vp_jax.sequence.layout import Layout
from vp_jax.sequence.vocab import Special

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample each output token: temperature, top-k, nucleus (top-p), classifier-free
  guidance scale."""
  temperature: float = 1.0      # 0 = greedy
  top_k: int = 0                # 0 = no top-k filter
  top_p: float = 1.0            # nucleus mass; 1 = no filter
  guidance_scale: float = 1.0   # 1 = no guidance (conditional only); CFG when != 1

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"SamplingConfig: temperature >= 0, top_k >= 0, top_p in (0, 1]; got "
                       f"{self}.")


def filter_logits(logits: jax.Array, lo: jax.Array, hi: jax.Array, *, temperature: jax.Array,
                  top_k: int, top_p: jax.Array | None) -> jax.Array:
  """logits [B, V] float32 -> logits with illegal / filtered ids at -inf, scaled by 1/temperature.

  Ids outside [lo, hi) (scalars) are removed first; top-k keeps the k largest of the rest; top-p
  keeps the smallest set of the largest ids whose probability reaches top_p (always at least one).
  `top_p=None` skips the nucleus filter, and with it the sort over the whole vocabulary."""
  ids = jnp.arange(logits.shape[-1])
  logits = jnp.where((ids >= lo) & (ids < hi), logits, NEG_INF)
  logits = logits / jnp.maximum(temperature, 1e-6)
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, NEG_INF)
  if top_p is None:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  # The threshold is the smallest kept logit: the first sorted id at which the mass reaches top_p.
  cutoff_index = jnp.sum(cum < top_p, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_logits, jnp.minimum(cutoff_index, logits.shape[-1] - 1),
                               axis=-1)
  return jnp.where((top_p >= 1.0) | (logits >= cutoff), logits, NEG_INF)


def _sample_loop(graphdef, state, prefix, text, text_mask, lo, hi, stop_tokens, key,
                 temperature, top_p, guidance_scale, *, top_k: int, guided: bool,
                 greedy: bool, nucleus: bool):
  model = nnx.merge(graphdef, state)
  b = prefix.shape[0]
  n = lo.shape[0]
  # What a finished row holds: the layout's forced tokens (e.g. `<eos>` after `<eov_o>`), else PAD.
  closing = jnp.where(hi - lo == 1, lo, Special.PAD).astype(jnp.int32)        # [N]
  if guided:
    prefix = jnp.concatenate([prefix, prefix])
    if text is not None:
      text = jnp.concatenate([text, text])
      text_mask = jnp.concatenate([text_mask, jnp.zeros_like(text_mask)])
  logits, cache = model.prefill(prefix, cache_length=prefix.shape[1] + n, text=text,
                                text_mask=text_mask)
  layers = model.decode_layers()         # sliced once here, not on every token (see decode_layers)

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, logits, cache, done, out = carry
    if guided:
      cond_l, uncond_l = logits[:b], logits[b:]
      logits = uncond_l + guidance_scale * (cond_l - uncond_l)
    filtered = filter_logits(logits, lo[i], hi[i], temperature=temperature, top_k=top_k,
                             top_p=top_p if nucleus else None)
    if greedy:
      token = jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    else:
      token = jax.random.categorical(jax.random.fold_in(key, i), filtered).astype(jnp.int32)
    token = jnp.where(done, closing[i], token)
    done = done | jnp.isin(token, stop_tokens)
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
    step_token = jnp.concatenate([token, token]) if guided else token
    logits, cache = model.decode_step(step_token, cache, layers)
    return i + 1, logits, cache, done, out

  out = jnp.broadcast_to(closing, (b, n))
  carry = (jnp.asarray(0), logits, cache, jnp.zeros((b,), bool), out)
  i, _, _, _, out = jax.lax.while_loop(cond, body, carry)
  return out, i


class Sampler:
  """Samples the outputs of a layout from a PrefixLM, sharded like training (batch over the data
  axes of `mesh`, parameters as the model's own shardings)."""

  def __init__(self, model: nnx.Module, mesh: jax.sharding.Mesh, rules: LogicalRules):
    self.graphdef, state = nnx.split(model)
    self.mesh, self.rules = mesh, rules
    # Place the parameters as training does (their logical axes under `rules`), so a model built
    # or restored anywhere samples on this mesh.
    pure = jax.device_put(nnx.to_pure_dict(state), state_shardings(state, rules, mesh))
    nnx.replace_by_pure_dict(state, pure)
    self.state = state
    self._jitted = jax.jit(
        functools.partial(_sample_loop, self.graphdef),
        static_argnames=("top_k", "guided", "greedy", "nucleus"))

  def sample(self, layout: Layout, prefix: np.ndarray, *, key: jax.Array,
             config: SamplingConfig = SamplingConfig(), text: np.ndarray | None = None,
             text_mask: np.ndarray | None = None) -> np.ndarray:
    """prefix int [B, P] (from `layout.prefix`, P = layout.prefix_length) -> the full sequences
    int32 [B, L]: prefix + sampled outputs (after a row stopped: forced tokens or PAD)."""
    prefix = np.asarray(prefix, np.int32)
    if prefix.ndim != 2 or prefix.shape[1] != layout.prefix_length:
      raise ValueError(f"Sampler: prefix must be [B, {layout.prefix_length}] for "
                       f"{layout.task.value}, got {prefix.shape}.")
    has_text = layout.text_slots()[1] > 0
    if has_text and text is None:
      raise ValueError(f"Sampler: {layout.task.value} has text slots; pass text embeddings.")
    if has_text and text_mask is None:
      text_mask = np.ones(np.asarray(text).shape[:2], bool)
    guided = config.guidance_scale != 1.0
    if guided and not has_text:
      raise ValueError("Sampler: classifier-free guidance drops the text condition; this layout "
                       "has none.")
    lo, hi = (x[layout.prefix_length:] for x in layout.legal_ranges())
    stops = np.asarray(layout.stop_tokens() or (-1,), np.int32)
    with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
      put = lambda x: None if x is None else jax.device_put(
          np.asarray(x), batch_sharding(self.mesh, self.rules, np.asarray(x).ndim))
      out, _ = self._jitted(
          self.state, put(prefix), put(text), put(text_mask), jnp.asarray(lo), jnp.asarray(hi),
          jnp.asarray(stops), key, jnp.float32(config.temperature), jnp.float32(config.top_p),
          jnp.float32(config.guidance_scale), top_k=config.top_k, guided=guided,
          greedy=config.temperature == 0, nucleus=config.top_p < 1.0)
    return np.concatenate([prefix, np.asarray(jax.device_get(out))], axis=1)
