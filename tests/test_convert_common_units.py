"""`flatten` / `unflatten` of vp_jax/text/convert_common.py: exact keys, order and round trip of
non-empty trees, and the documented handling of empty sub-mappings (no leaves, so no key, as with
flax.traverse_util.flatten_dict's default). tests/test_text_convert_units.py covers the rest of
the module."""
import numpy as np

from vp_jax.text.convert_common import flatten, unflatten


def test_non_empty_trees_flatten_to_exact_keys_and_round_trip():
  leaf = np.arange(4.0)
  tree = {"token_embed": leaf, "layers": {"q": {"kernel": leaf}, "scale": 2.5}}
  flat = flatten(tree)
  assert flat == {"token_embed": leaf, "layers/q/kernel": leaf, "layers/scale": 2.5}
  assert list(flat) == ["token_embed", "layers/q/kernel", "layers/scale"]   # the tree's order
  assert flat["layers/q/kernel"] is leaf                                    # leaves not copied
  assert unflatten(flat) == tree
  assert flatten(tree, prefix="p/") == {"p/" + k: v for k, v in flat.items()}


def test_an_empty_sub_mapping_leaves_no_key():
  """A module without weights contributes nothing, so a template and a checkpoint that differ
  only by one compare equal."""
  tree = {"a": {}, "b": 1, "m": {"e": {}, "f": {"g": 2}}}
  assert flatten(tree) == {"b": 1, "m/f/g": 2}
  assert unflatten(flatten(tree)) == {"b": 1, "m": {"f": {"g": 2}}}
  assert flatten({}) == {} and unflatten({}) == {}
  assert flatten({"x": {"y": {}}}) == {}


def test_is_leaf_keeps_a_mapping_whole():
  spec = {"driver": "zarr", "kvstore": {"path": "a/b"}}
  flat = flatten({"k": spec, "n": {"w": 1}}, is_leaf=lambda m: "driver" in m)
  assert flat == {"k": spec, "n/w": 1} and flat["k"] is spec
