"""Checkpoint conversion: parity with HF transformers' PyTorch T5EncoderModel (safetensors and a
torch state dict), a T5X checkpoint (msgpack + TensorStore, and Orbax), clear errors for bad
checkpoints.

Tolerance: float32 last hidden states agree with PyTorch to max |diff| < 2e-5 (values are O(1);
measured ~1.5e-6), at every position of padded batches.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vp_jax.text import convert_hf, convert_t5x, safetensors_io  # noqa: E402
from vp_jax.text.config import T5EncoderConfig  # noqa: E402
from vp_jax.text.convert_common import CheckpointConversionError  # noqa: E402
from vp_jax.text.model import apply_fn  # noqa: E402

ATOL = 2e-5
# A non-default bucket layout (16 buckets, max distance 20) so sequences of 40 reach the cap.
HF_KW = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
             relative_attention_num_buckets=16, relative_attention_max_distance=20,
             feed_forward_proj="gated-gelu", dropout_rate=0.0)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  """A random tiny HF T5 v1.1 encoder saved as safetensors and as a torch state dict, with its
  outputs on a padded batch."""
  torch.manual_seed(0)
  cfg = transformers.T5Config(**HF_KW)
  model = transformers.T5EncoderModel(cfg).eval()
  with torch.no_grad():  # norm scales are 1 at init; make them matter
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
  st_dir = tmp_path_factory.mktemp("hf_safetensors")
  model.save_pretrained(st_dir)
  assert os.path.exists(st_dir / "model.safetensors")
  pt_dir = tmp_path_factory.mktemp("hf_torch")
  shutil.copy(st_dir / "config.json", pt_dir / "config.json")
  torch.save(model.state_dict(), pt_dir / "pytorch_model.bin")
  rng = np.random.default_rng(0)
  ids = rng.integers(2, 128, size=(4, 40)).astype(np.int32)
  lengths = [40, 23, 1, 9]
  mask = np.arange(40)[None] < np.array(lengths)[:, None]
  ids[~mask] = 0
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask.astype(np.int64))).last_hidden_state.numpy()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  return dict(model=model, st_dir=st_dir, pt_dir=pt_dir, ids=ids, mask=mask, ref=ref,
              state=state)


_APPLY = {}


def _hidden(cfg, params, ids, mask):
  if cfg not in _APPLY:
    _APPLY[cfg] = jax.jit(apply_fn(cfg))
  return np.asarray(_APPLY[cfg](params, jnp.asarray(ids), jnp.asarray(mask)))


def test_hf_safetensors_parity_with_pytorch_on_padded_batch(hf):
  cfg, params = convert_hf.load(hf["st_dir"])
  assert (cfg.num_buckets, cfg.max_distance, cfg.d_ff, cfg.num_layers) == (16, 20, 48, 2)
  out = _hidden(cfg, params, hf["ids"], hf["mask"])
  assert np.abs(hf["ref"]).max() > 0.5
  np.testing.assert_allclose(out, hf["ref"], atol=ATOL, rtol=0)  # all positions, pads included


def test_hf_torch_state_dict_gives_the_same_parameters(hf):
  cfg_st, params_st = convert_hf.load(hf["st_dir"])
  cfg_pt, params_pt = convert_hf.load(hf["pt_dir"])
  assert cfg_pt == cfg_st
  for a, b in zip(jax.tree.leaves(params_st), jax.tree.leaves(params_pt)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(_hidden(cfg_pt, params_pt, hf["ids"], hf["mask"]), hf["ref"],
                             atol=ATOL, rtol=0)


def _t5x_arrays_from_hf(state, num_layers):
  """T5X `target` arrays written from the HF state dict with the mapping of HF's own
  convert_t5x_checkpoint_to_pytorch.py (HF = T5X.T for every kernel and the relpos table)."""
  out = {"token_embedder/embedding": state["shared.weight"],
         "encoder/relpos_bias/rel_embedding":
             state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T,
         "encoder/encoder_norm/scale": state["encoder.final_layer_norm.weight"]}
  for i in range(num_layers):
    b = f"encoder.block.{i}.layer."
    t = f"encoder/layers_{i}/"
    out[t + "pre_attention_layer_norm/scale"] = state[b + "0.layer_norm.weight"]
    for hf_name, t5x_name in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
      out[t + f"attention/{t5x_name}/kernel"] = state[b + f"0.SelfAttention.{hf_name}.weight"].T
    out[t + "pre_mlp_layer_norm/scale"] = state[b + "1.layer_norm.weight"]
    for name in ("wi_0", "wi_1", "wo"):
      out[t + f"mlp/{name}/kernel"] = state[b + f"1.DenseReluDense.{name}.weight"].T
  # Decoder parameters of the full encoder-decoder checkpoint are ignored by the encoder.
  out["decoder/layers_0/self_attention/query/kernel"] = np.ones((32, 32), np.float32)
  out["decoder/decoder_norm/scale"] = np.ones((32,), np.float32)
  return out


def test_t5x_checkpoint_parity_with_pytorch(hf, tmp_path):
  cfg = convert_hf.read_config(hf["st_dir"])
  arrays = _t5x_arrays_from_hf(hf["state"], cfg.num_layers)
  # Small arrays inline in the msgpack file, the rest in TensorStore zarr folders (as T5X does).
  convert_t5x.save(tmp_path / "model", 5, {k: v * 0 for k, v in arrays.items()}, inline_below=64)
  path = convert_t5x.save(tmp_path / "model", 1000, arrays, inline_below=64)
  assert os.path.isdir(os.path.join(path, "target.encoder.layers_1.mlp.wi_0.kernel"))
  assert not os.path.exists(os.path.join(path, "target.encoder.encoder_norm.scale"))
  _, params = convert_t5x.load(tmp_path / "model", cfg)  # the latest step: 1000
  np.testing.assert_allclose(_hidden(cfg, params, hf["ids"], hf["mask"]), hf["ref"], atol=ATOL,
                             rtol=0)
  _, step5 = convert_t5x.load(tmp_path / "model", cfg, step=5)
  assert not np.any(step5["layers"]["q"])


def test_t5x_orbax_checkpoint(hf, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  cfg = convert_hf.read_config(hf["st_dir"])
  flat = _t5x_arrays_from_hf(hf["state"], cfg.num_layers)
  nested = {}
  for name, value in flat.items():
    node = nested
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  ckpt = ocp.PyTreeCheckpointer()
  ckpt.save(str(tmp_path / "checkpoint_7"), {"optimizer": {"target": nested}})
  ckpt.close()
  _, params = convert_t5x.load(tmp_path, cfg)
  _, from_hf = convert_hf.load(hf["st_dir"])
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(from_hf)):
    np.testing.assert_array_equal(a, b)


def test_save_hf_roundtrip_loads_in_transformers(hf, tmp_path):
  cfg, params = convert_hf.load(hf["st_dir"])
  convert_hf.save(tmp_path, cfg, params)
  again = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
  with torch.no_grad():
    out = again(input_ids=torch.tensor(hf["ids"], dtype=torch.long),
                attention_mask=torch.tensor(hf["mask"].astype(np.int64))).last_hidden_state
  np.testing.assert_allclose(out.numpy(), hf["ref"], atol=1e-6, rtol=0)
  # And the HF safetensors library reads our writer's file.
  st = pytest.importorskip("safetensors.numpy")
  ours = safetensors_io.load(tmp_path / "model.safetensors")
  theirs = st.load_file(str(tmp_path / "model.safetensors"))
  assert sorted(ours) == sorted(theirs)
  for k in ours:
    np.testing.assert_array_equal(ours[k], theirs[k])


def test_safetensors_bfloat16_roundtrip(tmp_path):
  import ml_dtypes
  x = (np.arange(12, dtype=np.float32) / 7).reshape(3, 4).astype(ml_dtypes.bfloat16)
  y = np.arange(5, dtype=np.int64)
  safetensors_io.save(tmp_path / "a.safetensors", {"x": x, "y": y})
  got = safetensors_io.load(tmp_path / "a.safetensors")
  assert got["x"].dtype == ml_dtypes.bfloat16 and got["x"].shape == (3, 4)
  np.testing.assert_array_equal(got["x"].astype(np.float32), x.astype(np.float32))
  np.testing.assert_array_equal(got["y"], y)
  # A torch bf16 state dict converts to the same values.
  sd = {"x": torch.tensor(x.astype(np.float32)).to(torch.bfloat16)}
  torch.save(sd, tmp_path / "w.bin")
  from_torch = convert_hf.read_arrays(tmp_path / "w.bin")["x"]
  np.testing.assert_array_equal(from_torch.astype(np.float32), x.astype(np.float32))


def test_partial_or_wrong_checkpoints_raise_naming_the_parameter(hf, tmp_path):
  cfg = convert_hf.read_config(hf["st_dir"])
  arrays = dict(convert_hf.read_arrays(hf["st_dir"]))
  missing = {k: v for k, v in arrays.items()
             if k != "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"}
  with pytest.raises(CheckpointConversionError,
                     match=r"missing parameter 'encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1"):
    convert_hf.convert(missing, cfg)
  wrong = T5EncoderConfig(**{**cfg.__dict__, "d_ff": 64})
  with pytest.raises(CheckpointConversionError,
                     match=r"'encoder\.block\.0\.layer\.1\.DenseReluDense\.wi_0\.weight' has shape "
                           r"\(48, 32\), expected \(64, 32\)"):
    convert_hf.convert(arrays, wrong)
  fewer = T5EncoderConfig(**{**cfg.__dict__, "num_layers": 1})
  with pytest.raises(CheckpointConversionError, match=r"encoder\.block\.1\..*no place"):
    convert_hf.convert(arrays, fewer)
  v10 = dict(arrays)
  v10["encoder.block.0.layer.1.DenseReluDense.wi.weight"] = np.zeros((48, 32), np.float32)
  with pytest.raises(CheckpointConversionError, match=r"DenseReluDense\.wi\.weight.*v1\.0"):
    convert_hf.convert(v10, cfg)
  nan = dict(arrays)
  nan["encoder.final_layer_norm.weight"] = np.full((32,), np.nan, np.float32)
  with pytest.raises(CheckpointConversionError, match="final_layer_norm.*non-finite"):
    convert_hf.convert(nan, cfg)
  # A truncated safetensors file names the file and the tensor.
  data = (hf["st_dir"] / "model.safetensors").read_bytes()
  (tmp_path / "model.safetensors").write_bytes(data[:len(data) // 2])
  shutil.copy(hf["st_dir"] / "config.json", tmp_path / "config.json")
  with pytest.raises(ValueError, match=r"model\.safetensors: tensor .*truncated"):
    convert_hf.load(tmp_path)
  # T5X: a TensorStore folder deleted after writing.
  t5x = _t5x_arrays_from_hf(hf["state"], cfg.num_layers)
  path = convert_t5x.save(tmp_path / "t5x", 1, t5x)
  shutil.rmtree(os.path.join(path, "target.encoder.layers_1.attention.out.kernel"))
  with pytest.raises(CheckpointConversionError,
                     match=r"cannot read parameter 'encoder/layers_1/attention/out/kernel'"):
    convert_t5x.load(tmp_path / "t5x", cfg)
  del t5x["encoder/relpos_bias/rel_embedding"]
  path = convert_t5x.save(tmp_path / "t5x2", 1, t5x)
  with pytest.raises(CheckpointConversionError,
                     match=r"missing parameter 'encoder/relpos_bias/rel_embedding'"):
    convert_t5x.load(path, cfg)
  with pytest.raises(FileNotFoundError, match="no T5X checkpoint"):
    convert_t5x.load(tmp_path / "t5x2" / "..", cfg)


def test_hf_config_json_is_read(hf):
  with open(hf["st_dir"] / "config.json") as f:
    raw = json.load(f)
  cfg = T5EncoderConfig.from_hf_config(raw)
  assert (cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.vocab_size) == (32, 4, 8, 128)


def test_benchmark_script_times_both_and_checks_parity():
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "text_encoder.py"
  spec = importlib.util.spec_from_file_location("benchmarks_text_encoder", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  cfg = T5EncoderConfig(name="bench-tiny", vocab_size=640, d_model=32, num_heads=4, head_dim=8,
                        d_ff=48, num_layers=1)
  result = bench.run(cfg, num_texts=8, batch_size=8, repeats=1, torch_ref=True)
  assert result["num_texts"] == 8 and result["batch_size"] == 8
  assert result["texts_per_s"] == pytest.approx(8 / result["seconds"])
  assert result["speed_ratio"] == pytest.approx(result["torch_seconds"] / result["seconds"])
  assert result["max_abs_diff"] < ATOL
  assert 9 <= result["real_tokens_per_text"] <= 40    # the dataset captions: ~24 pieces + EOS


def test_sharded_hf_checkpoints_via_index_files(hf, tmp_path):
  """Big checkpoints (google/t5-v1_1-xl) come as shards listed in an index json."""
  arrays = convert_hf.read_arrays(hf["st_dir"])
  names = sorted(arrays)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for shard, keys in shards.items():
    safetensors_io.save(tmp_path / shard, {k: np.asarray(arrays[k]) for k in keys})
    weight_map.update({k: shard for k in keys})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  shutil.copy(hf["st_dir"] / "config.json", tmp_path / "config.json")
  torch_dir = tmp_path / "torch"
  torch_dir.mkdir()
  shutil.copy(hf["st_dir"] / "config.json", torch_dir / "config.json")
  for i, keys in enumerate(shards.values()):
    torch.save({k: torch.from_numpy(np.array(arrays[k])) for k in keys},
               torch_dir / f"pytorch_model-0000{i + 1}.bin")
  (torch_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
      k: f"pytorch_model-0000{i + 1}.bin" for i, keys in enumerate(shards.values())
      for k in keys}}))
  _, want = convert_hf.load(hf["st_dir"])
  for directory in (tmp_path, torch_dir):
    _, got = convert_hf.load(directory)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)


def test_t5x_version0_msgpack_with_split_head_kernels(hf, tmp_path):
  """Older T5X checkpoints: no "version" (the optimizer dict at the top), every array inline;
  attention kernels may be stored with the heads split out ([D, H, K] / [H, K, D])."""
  from flax import serialization
  cfg = convert_hf.read_config(hf["st_dir"])
  flat = _t5x_arrays_from_hf(hf["state"], cfg.num_layers)
  d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
  target = {}
  for name, value in flat.items():
    if name.endswith(("query/kernel", "key/kernel", "value/kernel")):
      value = value.reshape(d, h, k)
    elif name.endswith("out/kernel"):
      value = value.reshape(h, k, d)
    node = target
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.asarray(value)
  (tmp_path / "checkpoint").write_bytes(serialization.msgpack_serialize({"target": target}))
  _, params = convert_t5x.load(tmp_path, cfg)
  np.testing.assert_allclose(_hidden(cfg, params, hf["ids"], hf["mask"]), hf["ref"], atol=ATOL,
                             rtol=0)
