"""`load_lpips_weights` on its own: small checkpoints in the public key layouts (torchvision VGG
`features.{i}.weight` [out, in, 3, 3] / `.bias`, LPIPS `lin{l}.model.1.weight` [1, C, 1, 1]) written
here as .npz (and .pth when torch is installed) come back under this module's names with kernels as
[3, 3, in, out] element for element; missing and misshapen keys are named."""
import numpy as np
import pytest

from vp_jax.models.magvit.config import PerceptualConfig
from vp_jax.models.magvit.perceptual import load_lpips_weights

WIDTHS, CONVS = (2, 3), (2, 1)      # features.0, features.2 | pool | features.5


def _state_dicts():
  """Distinct values: weight element [o, i, ky, kx] of features.{idx} encodes all five."""
  vgg, cin = {}, 3
  for idx, width in ((0, 2), (2, 2), (5, 3)):
    o, i, ky, kx = np.meshgrid(np.arange(width), np.arange(cin), np.arange(3), np.arange(3),
                               indexing="ij")
    vgg[f"features.{idx}.weight"] = (idx * 10000 + o * 1000 + i * 100 + ky * 10 + kx).astype(
        np.float32)
    vgg[f"features.{idx}.bias"] = (idx + 0.5 + np.arange(width)).astype(np.float32)
    cin = width
  lin = {"lin0.model.1.weight": np.array([0.25, 0.75], np.float32).reshape(1, 2, 1, 1),
         "lin1.model.1.weight": np.array([0.1, 0.2, 0.3], np.float32).reshape(1, 3, 1, 1)}
  return vgg, lin


def _npz(tmp_path, vgg, lin, tag=""):
  np.savez(tmp_path / f"vgg{tag}.npz", **vgg)
  np.savez(tmp_path / f"lin{tag}.npz", **lin)
  return PerceptualConfig(widths=WIDTHS, convs_per_block=CONVS,
                          vgg_weights=str(tmp_path / f"vgg{tag}.npz"),
                          lpips_weights=str(tmp_path / f"lin{tag}.npz"))


def _check_layout(out):
  assert sorted(out) == ["conv0_0/bias", "conv0_0/kernel", "conv0_1/bias", "conv0_1/kernel",
                         "conv1_0/bias", "conv1_0/kernel", "lin0", "lin1"]
  assert out["conv0_0/kernel"].shape == (3, 3, 3, 2)
  assert out["conv0_1/kernel"].shape == (3, 3, 2, 2)
  assert out["conv1_0/kernel"].shape == (3, 3, 2, 3)
  # kernel[ky, kx, in, out] = features.{idx}.weight[out, in, ky, kx]
  assert out["conv0_0/kernel"][1, 2, 0, 1] == 1012.0
  assert out["conv0_1/kernel"][2, 0, 1, 0] == 20120.0
  assert out["conv1_0/kernel"][0, 1, 1, 2] == 52101.0
  np.testing.assert_array_equal(out["conv0_0/bias"], [0.5, 1.5])
  np.testing.assert_array_equal(out["conv0_1/bias"], [2.5, 3.5])
  np.testing.assert_array_equal(out["conv1_0/bias"], [5.5, 6.5, 7.5])
  np.testing.assert_array_equal(out["lin0"], np.float32([0.25, 0.75]))
  np.testing.assert_array_equal(out["lin1"], np.float32([0.1, 0.2, 0.3]))
  assert all(v.dtype == np.float32 for v in out.values())


def test_npz_checkpoints_map_to_the_module_layout(tmp_path):
  vgg, lin = _state_dicts()
  vgg["features.30.weight"] = np.zeros((1,), np.float32)   # extra keys are ignored
  cfg = _npz(tmp_path, vgg, lin)
  out = load_lpips_weights(cfg)
  _check_layout(out)
  # Every kernel element, not only the spot checks above.
  np.testing.assert_array_equal(out["conv1_0/kernel"],
                                np.transpose(vgg["features.5.weight"], (2, 3, 1, 0)))
  assert load_lpips_weights(cfg) is out          # cached per config


def test_float64_npz_values_come_back_as_float32(tmp_path):
  vgg, lin = _state_dicts()
  cfg = _npz(tmp_path, {k: v.astype(np.float64) for k, v in vgg.items()},
             {k: v.astype(np.float64) for k, v in lin.items()})
  _check_layout(load_lpips_weights(cfg))


def test_pth_checkpoints_including_a_nested_state_dict(tmp_path):
  torch = pytest.importorskip("torch")
  vgg, lin = _state_dicts()
  torch.save({k: torch.from_numpy(v) for k, v in vgg.items()}, tmp_path / "vgg.pth")
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in lin.items()}},
             tmp_path / "lin.pth")
  cfg = PerceptualConfig(widths=WIDTHS, convs_per_block=CONVS,
                         vgg_weights=str(tmp_path / "vgg.pth"),
                         lpips_weights=str(tmp_path / "lin.pth"))
  _check_layout(load_lpips_weights(cfg))


def test_missing_and_misshapen_keys_are_named(tmp_path):
  vgg, lin = _state_dicts()
  no_bias = {k: v for k, v in vgg.items() if k != "features.2.bias"}
  cfg = _npz(tmp_path, no_bias, lin, "a")
  with pytest.raises(KeyError, match=r"missing 'features.2.bias' \(VGG layout \(2, 3\) x \(2, 1\)"):
    load_lpips_weights(cfg)
  wide = dict(vgg, **{"features.5.weight": np.zeros((3, 3, 3, 3), np.float32)})
  cfg = _npz(tmp_path, wide, lin, "b")
  with pytest.raises(ValueError, match=r"'features.5.weight' has shape \(3, 3, 3, 3\), expected "
                                       r"\(3, 2, 3, 3\)"):
    load_lpips_weights(cfg)
  cfg = _npz(tmp_path, vgg, {"lin0.model.1.weight": lin["lin0.model.1.weight"]}, "c")
  with pytest.raises(KeyError, match="missing 'lin1.model.1.weight'"):
    load_lpips_weights(cfg)
  flat = dict(lin, **{"lin0.model.1.weight": np.zeros((2,), np.float32)})
  cfg = _npz(tmp_path, vgg, flat, "d")
  with pytest.raises(ValueError, match=r"'lin0.model.1.weight' has shape \(2,\), expected "
                                       r"\(1, 2, 1, 1\)"):
    load_lpips_weights(cfg)
