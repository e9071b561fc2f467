"""The trainer: loss curves across device counts and rule sets, resume, restore, non-finite steps."""
import jax
import numpy as np
import pytest

from tests.helpers import tiny_batches, tiny_trainer
from vp_jax.parallel.mesh import MeshConfig
from vp_jax.train.optim import OptimizerConfig


def test_tiny_model_learns_on_one_device():
  result = tiny_trainer(train_steps=40, optimizers={
      "model": OptimizerConfig(learning_rate=3e-2, warmup_steps=2)}).fit(tiny_batches())
  losses = [result.losses[s] for s in sorted(result.losses)]
  assert len(losses) == 40
  assert losses[0] == pytest.approx(np.log(64), rel=0.15)   # starts near uniform over 64 ids
  assert np.mean(losses[-5:]) < 0.65 * losses[0], losses


@pytest.mark.parametrize("mesh", [MeshConfig(data=1, fsdp=8, tensor=1),
                                  MeshConfig(data=2, fsdp=2, tensor=2),
                                  MeshConfig(data=1, fsdp=2, tensor=4)],
                         ids=["fsdp8", "dp2-fsdp2-tp2", "fsdp2-tp4"])
def test_eight_devices_match_one_device(mesh):
  one = tiny_trainer().fit(tiny_batches()).losses
  eight = tiny_trainer(devices=8, mesh=mesh).fit(tiny_batches()).losses
  np.testing.assert_allclose([eight[s] for s in sorted(eight)], [one[s] for s in sorted(one)],
                             rtol=2e-5)
