"""EmbeddingCache.put (what it writes, what `get` rebuilds, what it refuses) and
T5EncoderConfig.inner_dim (num_heads * head_dim, the width of the attention parameters)."""
import os

import numpy as np
import pytest
from flax import nnx

from vp_jax.text.cache import EmbeddingCache
from vp_jax.text.config import PRESETS as T5_PRESETS
from vp_jax.text.config import T5EncoderConfig
from vp_jax.text.model import T5Layer


# -- EmbeddingCache.put ---------------------------------------------------------------------------
def _entry(n, length=6, dim=3, dtype=np.float32, seed=0):
  emb = np.zeros((length, dim), dtype)
  emb[:n] = np.random.default_rng(seed).normal(size=(n, dim)).astype(dtype)
  mask = np.arange(length) < n
  return emb, mask


def test_put_then_get_returns_the_same_arrays(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(4)
  assert cache.get("a red circle") is None
  cache.put("a red circle", emb, mask, 2)
  got_emb, got_mask, got_trunc = cache.get("a red circle")
  assert got_emb.dtype == np.float32 and got_emb.tobytes() == emb.tobytes()
  assert got_mask.dtype == bool and np.array_equal(got_mask, mask)
  assert got_trunc == 2 and isinstance(got_trunc, int)
  # float16 is kept as float16, bit for bit; an all-padding text round-trips too.
  emb16, mask16 = _entry(2, dtype=np.float16, seed=1)
  cache.put("half", emb16, mask16, 0)
  got16 = cache.get("half")
  assert got16[0].dtype == np.float16 and got16[0].tobytes() == emb16.tobytes()
  empty, none = _entry(0)
  cache.put("", empty, none, 0)
  got_empty = cache.get("")
  assert not got_empty[0].any() and got_empty[0].shape == (6, 3) and not got_empty[1].any()
  # Persisted: a new cache object for the same model reads it; another model's cache does not.
  assert EmbeddingCache(tmp_path, "enc/v1").get("a red circle")[0].tobytes() == emb.tobytes()
  assert EmbeddingCache(tmp_path, "enc/v2").get("a red circle") is None
  assert (cache.hits, cache.misses) == (0, 0)                 # put and get do not count


def test_put_writes_one_npz_with_only_the_real_rows(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(4)
  cache.put("text", emb, mask, 5)
  path = cache._path("text")
  assert os.path.dirname(os.path.dirname(path)) == cache.directory
  assert os.path.basename(os.path.dirname(path)) == os.path.basename(path)[:2]
  with np.load(path) as z:
    assert sorted(z.files) == ["mask", "model_id", "num_truncated", "rows", "text"]
    assert z["rows"].shape == (4, 3) and z["rows"].tobytes() == emb[:4].tobytes()
    np.testing.assert_array_equal(z["mask"], mask)
    assert int(z["num_truncated"]) == 5 and z["num_truncated"].dtype == np.int32
    assert str(z["text"]) == "text" and str(z["model_id"]) == "enc/v1"
  files = [f for _, _, fs in os.walk(cache.directory) for f in fs]
  assert files == [os.path.basename(path)]                    # no temporary file left behind
  # Putting again replaces the entry.
  emb2, mask2 = _entry(2, seed=3)
  cache.put("text", emb2, mask2, 0)
  got = cache.get("text")
  assert got[0].tobytes() == emb2.tobytes() and got[1].sum() == 2 and got[2] == 0
  assert len([f for _, _, fs in os.walk(cache.directory) for f in fs]) == 1


def test_put_refuses_padding_that_is_not_trailing_zeros(tmp_path):
  cache = EmbeddingCache(tmp_path, "enc/v1")
  emb, mask = _entry(3)
  holes = mask.copy()
  holes[1] = False                                            # a gap before a real token
  with pytest.raises(ValueError, match="expected trailing padding"):
    cache.put("gap", emb, holes, 0)
  dirty = emb.copy()
  dirty[5, 0] = 1.0                                           # nonzero padded row
  with pytest.raises(ValueError, match="expected trailing padding"):
    cache.put("dirty", dirty, mask, 0)
  assert cache.get("gap") is None and cache.get("dirty") is None
  assert [f for _, _, fs in os.walk(cache.directory) for f in fs] == []


# -- T5EncoderConfig.inner_dim --------------------------------------------------------------------
def test_inner_dim_is_num_heads_times_head_dim():
  assert {n: c.inner_dim for n, c in T5_PRESETS.items()} == {
      "t5-v1_1-small": 384, "t5-v1_1-base": 768, "t5-v1_1-large": 1024, "t5-v1_1-xl": 2048,
      "t5-v1_1-xxl": 4096}
  # Not d_model: t5-v1_1-small has 6 heads of 64 in a 512-wide model.
  assert T5_PRESETS["t5-v1_1-small"].d_model == 512
  cfg = T5EncoderConfig(vocab_size=10, d_model=12, num_heads=3, head_dim=5, d_ff=7, num_layers=1)
  assert cfg.inner_dim == 15


def test_inner_dim_is_the_width_of_the_attention_parameters():
  cfg = T5EncoderConfig(vocab_size=10, d_model=12, num_heads=3, head_dim=5, d_ff=7, num_layers=1)
  with nnx.use_eager_sharding(False):
    layer = nnx.eval_shape(lambda: T5Layer(cfg, rngs=nnx.Rngs(0)))
  for name in ("q", "k", "v"):
    shape = getattr(layer, name).shape
    assert shape == (12, 3, 5) and shape[1] * shape[2] == cfg.inner_dim
  assert layer.o.shape == (3, 5, 12)
  # The parameter count uses it: 4 attention matrices of d_model x inner_dim per layer.
  per_layer = 4 * 12 * 15 + 3 * 12 * 7 + 2 * 12
  assert cfg.num_params() == 10 * 12 + per_layer + 32 * 3 + 12
