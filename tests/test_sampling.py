"""KV-cache sampling: logit filters, legal ranges, greedy parity with full recomputation,
classifier-free guidance, determinism, sharded on 8 simulated devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.generate.sampling import Sampler, SamplingConfig, filter_logits
from vp_jax.models.prefix_lm.config import preset
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.sequence import layout as L
from vp_jax.sequence.vocab import Special

CFG = preset("tiny")
LAYOUT = L.make_layout(L.Task.TEXT_TO_VIDEO, vocab=CFG.vocab, text_length=4, latent_hw=(2, 2))


@pytest.fixture(scope="module")
def model():
  with nnx.use_eager_sharding(False):
    return nnx.jit(lambda: PrefixLM(CFG, rngs=nnx.Rngs(3)))()


@pytest.fixture(scope="module")
def sampler(model):
  return Sampler(model, make_mesh(MeshConfig(data=-1)), DEFAULT_RULES)


def _text(b, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(b, 4, CFG.text_dim)).astype(np.float32), np.ones((b, 4), bool)


@nnx.jit
def _full_logits(model, tokens, text, text_mask):
  b = tokens.shape[0]
  return model.logits(tokens, prefix_length=jnp.full((b,), LAYOUT.prefix_length), text=text,
                      text_mask=text_mask)


def _greedy_by_recompute(model, prefix, text, text_mask, scale=1.0):
  """The reference: re-run the whole sequence for every new token (no cache)."""
  lo, hi = LAYOUT.legal_ranges()
  tokens = np.concatenate([prefix, np.zeros((prefix.shape[0], LAYOUT.output_length), np.int32)],
                          axis=1)
  for pos in range(LAYOUT.prefix_length, LAYOUT.length):
    logits = np.array(_full_logits(model, tokens, text, text_mask))[:, pos - 1]
    if scale != 1.0:
      uncond = np.asarray(_full_logits(model, tokens, text, np.zeros_like(text_mask)))[:, pos - 1]
      logits = uncond + scale * (logits - uncond)
    logits[:, :lo[pos]] = -np.inf
    logits[:, hi[pos]:] = -np.inf
    tokens[:, pos] = logits.argmax(-1)
  return tokens


def test_filter_logits_ranges_top_k_top_p_temperature():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.3, 0.15]]))
  kw = dict(temperature=jnp.float32(1.0), top_k=0, top_p=jnp.float32(1.0))
  out = np.asarray(filter_logits(logits, 1, 3, **kw))
  assert np.all(out[0, [0, 3]] < -1e29) and np.allclose(out[0, 1:3], np.log([0.5, 0.3]))
  out = np.asarray(filter_logits(logits, 0, 4, **{**kw, "top_k": 2}))
  np.testing.assert_array_equal(out[0] > -1e29, [False, True, True, False])
  # top-p: the smallest set of the largest ids reaching the mass.
  keep = lambda p: np.asarray(filter_logits(logits, 0, 4, **{**kw, "top_p": jnp.float32(p)}))[0] > -1e29
  np.testing.assert_array_equal(keep(0.5), [False, True, False, False])
  np.testing.assert_array_equal(keep(0.6), [False, True, True, False])
  np.testing.assert_array_equal(keep(0.9), [False, True, True, True])
  out = np.asarray(filter_logits(logits, 0, 4, **{**kw, "temperature": jnp.float32(0.5)}))
  np.testing.assert_allclose(out, 2 * np.asarray(logits), rtol=1e-6)
  # top_p=None (the sampler's choice when top_p == 1): no nucleus filter, the same logits.
  np.testing.assert_array_equal(np.asarray(filter_logits(logits, 1, 3, **{**kw, "top_p": None})),
                                np.asarray(filter_logits(logits, 1, 3, **kw)))


def test_greedy_cached_sampling_equals_full_recompute_on_8_devices(model, sampler):
  text, mask = _text(8)
  prefix = np.stack([LAYOUT.prefix({})] * 8)
  out = sampler.sample(LAYOUT, prefix, key=jax.random.key(0), text=text, text_mask=mask,
                       config=SamplingConfig(temperature=0.0))
  assert out.shape == (8, LAYOUT.length)
  np.testing.assert_array_equal(out, _greedy_by_recompute(model, prefix, text, mask))
  video = LAYOUT.extract(out)["video"]                       # legal everywhere -> invertible
  assert video.shape == (8, 5, 2, 2)
  assert np.all(out[:, -2:] == [Special.EOV_O, Special.EOS])


def test_classifier_free_guidance_combines_conditional_and_unconditional(model, sampler):
  text, mask = _text(8, seed=1)
  prefix = np.stack([LAYOUT.prefix({})] * 8)
  guided = sampler.sample(LAYOUT, prefix, key=jax.random.key(0), text=text, text_mask=mask,
                          config=SamplingConfig(temperature=0.0, guidance_scale=3.0))
  np.testing.assert_array_equal(guided, _greedy_by_recompute(model, prefix, text, mask, 3.0))
  plain = sampler.sample(LAYOUT, prefix, key=jax.random.key(0), text=text, text_mask=mask,
                         config=SamplingConfig(temperature=0.0))
  assert np.any(guided != plain)


def test_random_sampling_is_legal_and_deterministic_per_key(sampler):
  text, mask = _text(8, seed=2)
  prefix = np.stack([LAYOUT.prefix({})] * 8)
  cfg = SamplingConfig(temperature=1.0, top_k=50, top_p=0.95, guidance_scale=2.0)
  a = sampler.sample(LAYOUT, prefix, key=jax.random.key(1), text=text, text_mask=mask, config=cfg)
  b = sampler.sample(LAYOUT, prefix, key=jax.random.key(1), text=text, text_mask=mask, config=cfg)
  c = sampler.sample(LAYOUT, prefix, key=jax.random.key(2), text=text, text_mask=mask, config=cfg)
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)
  lo, hi = LAYOUT.legal_ranges()
  assert np.all((a >= lo) & (a < hi))
  # Top-k 1 is greedy whatever the temperature.
  g = sampler.sample(LAYOUT, prefix, key=jax.random.key(5), text=text, text_mask=mask,
                     config=SamplingConfig(temperature=0.0, guidance_scale=2.0))
  k1 = sampler.sample(LAYOUT, prefix, key=jax.random.key(7), text=text, text_mask=mask,
                      config=SamplingConfig(temperature=1.0, top_k=1, guidance_scale=2.0))
  np.testing.assert_array_equal(g, k1)


def test_audio_outputs_sample_each_level_in_its_own_range(model):
  lay = L.make_layout(L.Task.VIDEO_TO_AUDIO, vocab=CFG.vocab, latent_hw=(1, 2),
                      num_audio_frames=3)
  sampler = Sampler(model, make_mesh(MeshConfig(data=2), jax.devices()[:2]), DEFAULT_RULES)
  prefix = np.stack([lay.prefix({L.VIDEO_IN: np.arange(10).reshape(5, 1, 2)})] * 2)
  out = sampler.sample(lay, prefix, key=jax.random.key(0), config=SamplingConfig(top_k=0))
  audio = lay.extract(out)["audio"]                   # raises if any id is in the wrong level
  assert audio.shape == (2, 4, 3) and audio.max() < CFG.vocab.audio_codes_per_level
  assert np.all(out[:, -2:] == [Special.EOA_O, Special.EOS])


def test_bad_calls_are_refused(sampler):
  text, mask = _text(8)
  with pytest.raises(ValueError, match=r"prefix must be \[B, 10\]"):
    sampler.sample(LAYOUT, np.zeros((8, 3), np.int32), key=jax.random.key(0), text=text)
  with pytest.raises(ValueError, match="pass text embeddings"):
    sampler.sample(LAYOUT, np.stack([LAYOUT.prefix({})] * 8), key=jax.random.key(0))
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)
