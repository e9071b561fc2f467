"""Mesh construction, logical-axis resolution and batch sharding."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES, get_rules
from vp_jax.parallel.sharding import constrain, global_batch, logical_to_spec


def test_mesh_shape_resolves_minus_one():
  assert MeshConfig(data=-1, fsdp=2, tensor=2).shape(8) == (2, 2, 2)
  assert MeshConfig(data=1, fsdp=-1, tensor=4).shape(8) == (1, 2, 4)
  assert MeshConfig().shape(1) == (1, 1, 1)


@pytest.mark.parametrize("cfg,match", [
    (MeshConfig(data=-1, fsdp=-1), "at most one axis"),
    (MeshConfig(data=-1, fsdp=3), "not divisible by 3"),
    (MeshConfig(data=2, fsdp=2, tensor=1), "covers 4 devices but 8"),
    (MeshConfig(data=0), r"MeshConfig.data=0"),
])
def test_mesh_config_errors(cfg, match):
  with pytest.raises(ValueError, match=match):
    cfg.shape(8)


def test_make_mesh_over_a_device_subset():
  mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 2}
  assert set(mesh.devices.flat) == set(jax.devices()[:4])
  assert make_mesh(MeshConfig(fsdp=4, data=-1)).devices.size == 8


def test_logical_to_spec_maps_drops_reused_axes_and_checks_divisibility():
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  assert logical_to_spec(("embed", "mlp"), DEFAULT_RULES, mesh) == P("fsdp", "tensor")
  # batch takes data+fsdp, so an embed dim later in the same array stays unsharded
  assert logical_to_spec(("batch", "length", "embed"), DEFAULT_RULES, mesh) == \
      P(("data", "fsdp"), None, None)
  assert logical_to_spec(("layers", None, "heads"), DEFAULT_RULES, mesh) == P(None, None, "tensor")
  with pytest.raises(ValueError, match="w: logical axis 'embd' has no rule"):
    logical_to_spec(("embd",), DEFAULT_RULES, mesh, name="w")
  with pytest.raises(ValueError, match=r"w: dimension 1 \('mlp', size 3\) is not divisible"):
    logical_to_spec(("embed", "mlp"), DEFAULT_RULES, mesh, (4, 3), name="w")
  with pytest.raises(ValueError, match="names no mesh axis"):
    logical_to_spec(("embed",), (("embed", "model"),), mesh)


def test_get_rules_named_and_explicit():
  assert get_rules("default") is DEFAULT_RULES
  assert get_rules([["embed", ["data", "fsdp"]], ["mlp", None]]) == \
      (("embed", ("data", "fsdp")), ("mlp", None))
  with pytest.raises(ValueError, match="Unknown logical axis rule set 'nope'"):
    get_rules("nope")


def test_global_batch_is_sharded_over_batch_axes():
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  local = {"x": np.arange(8 * 3).reshape(8, 3)}
  out = global_batch(local, mesh, DEFAULT_RULES)["x"]
  assert out.shape == (8, 3) and out.sharding.spec == P(("data", "fsdp"), None)
  np.testing.assert_array_equal(np.asarray(out), local["x"])
  assert {s.data.shape for s in out.addressable_shards} == {(2, 3)}
  with pytest.raises(ValueError, match="global batch 6 is not divisible by the 4"):
    global_batch({"x": np.zeros((6, 3))}, mesh, DEFAULT_RULES)


def test_constrain_applies_rules_inside_a_mesh_context_only():
  from flax import nnx
  x = np.ones((8, 4), np.float32)
  assert constrain(x, ("batch", "act_embed")) is x      # no mesh: no-op
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  with jax.set_mesh(mesh), nnx.logical_axis_rules(DEFAULT_RULES):
    y = jax.jit(lambda a: constrain(a * 2, ("batch", "act_mlp")))(x)
  assert y.sharding.spec == P(("data", "fsdp"), "tensor")
  np.testing.assert_array_equal(np.asarray(y), 2 * x)


def test_batch_ways():
  from vp_jax.parallel.sharding import batch_ways
  assert batch_ways(make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)), DEFAULT_RULES) == 4
  assert batch_ways(make_mesh(MeshConfig(data=8, fsdp=1, tensor=1)), DEFAULT_RULES) == 8
  assert batch_ways(make_mesh(MeshConfig(data=1, fsdp=1, tensor=8)), DEFAULT_RULES) == 1
