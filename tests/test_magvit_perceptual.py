"""Perceptual (LPIPS-VGG) network: weight loading from the public checkpoint layouts (torchvision
VGG16 `features.N.*`, LPIPS `linN.model.1.weight`) and numerical parity with a torch
re-implementation built from the same state dicts (small widths the test creates)."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vp_jax.models.magvit.config import PerceptualConfig
from vp_jax.models.magvit.perceptual import LPIPS, LPIPS_SCALE, LPIPS_SHIFT, vgg_conv_indices

torch = pytest.importorskip("torch")

WIDTHS, CONVS = (4, 6, 8), (2, 1, 2)


def test_vgg16_indices():
  assert vgg_conv_indices((2, 2, 3, 3, 3)) == [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21],
                                                [24, 26, 28]]


def _torch_weights(tmp_path, fmt):
  gen = torch.Generator().manual_seed(0)
  vgg, lin, cin = {}, {}, 3
  for b, (width, indices) in enumerate(zip(WIDTHS, vgg_conv_indices(CONVS))):
    for idx in indices:
      vgg[f"features.{idx}.weight"] = torch.randn(width, cin, 3, 3, generator=gen) * 0.3
      vgg[f"features.{idx}.bias"] = torch.randn(width, generator=gen) * 0.1
      cin = width
    lin[f"lin{b}.model.1.weight"] = torch.rand(1, width, 1, 1, generator=gen)
  if fmt == "pth":
    torch.save(vgg, tmp_path / "vgg.pth")
    torch.save(lin, tmp_path / "lin.pth")
    paths = str(tmp_path / "vgg.pth"), str(tmp_path / "lin.pth")
  else:
    np.savez(tmp_path / "vgg.npz", **{k: v.numpy() for k, v in vgg.items()})
    np.savez(tmp_path / "lin.npz", **{k: v.numpy() for k, v in lin.items()})
    paths = str(tmp_path / "vgg.npz"), str(tmp_path / "lin.npz")
  return vgg, lin, paths


def _torch_lpips(vgg, lin, x, y):
  """LPIPS as the reference package computes it (NCHW, torch ops)."""
  import torch.nn.functional as F
  shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
  scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)

  def feats(t):
    h, out = (t - shift) / scale, []
    for b, indices in enumerate(vgg_conv_indices(CONVS)):
      if b:
        h = F.max_pool2d(h, 2, 2)
      for idx in indices:
        h = F.relu(F.conv2d(h, vgg[f"features.{idx}.weight"], vgg[f"features.{idx}.bias"],
                            padding=1))
      out.append(h)
    return out

  total = 0
  for b, (fx, fy) in enumerate(zip(feats(x), feats(y))):
    nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    total = total + F.conv2d((nx - ny) ** 2, lin[f"lin{b}.model.1.weight"]).mean((2, 3))
  return total[:, 0]


@pytest.mark.parametrize("fmt", ["pth", "npz"])
def test_lpips_matches_torch_reference(tmp_path, fmt):
  vgg, lin, (vgg_path, lin_path) = _torch_weights(tmp_path, fmt)
  cfg = PerceptualConfig(widths=WIDTHS, convs_per_block=CONVS, vgg_weights=vgg_path,
                         lpips_weights=lin_path)
  net = LPIPS(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
  ours = np.asarray(net(jnp.asarray(x), jnp.asarray(y)))
  ref = _torch_lpips(vgg, lin, torch.from_numpy(x.transpose(0, 3, 1, 2)),
                     torch.from_numpy(y.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
  assert np.all(ours > 0)
  np.testing.assert_allclose(np.asarray(net(jnp.asarray(x), jnp.asarray(x))), 0.0, atol=1e-7)
  # Frozen weights are model variables, not parameters.
  assert not nnx.to_pure_dict(nnx.state(net, nnx.Param))


def test_loading_errors(tmp_path):
  vgg, lin, (vgg_path, lin_path) = _torch_weights(tmp_path, "npz")
  bad = PerceptualConfig(widths=(4, 6, 9), convs_per_block=CONVS, vgg_weights=vgg_path,
                         lpips_weights=lin_path)
  with pytest.raises(ValueError, match="features.8.weight"):
    LPIPS(bad, rngs=nnx.Rngs(0))
  deeper = dataclasses.replace(bad, widths=(4, 6, 8, 8), convs_per_block=(2, 1, 2, 1))
  with pytest.raises(KeyError, match="features.13.weight"):
    LPIPS(deeper, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="both"):
    LPIPS(PerceptualConfig(vgg_weights=vgg_path), rngs=nnx.Rngs(0))
