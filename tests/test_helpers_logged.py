"""tests.helpers.logged_scalars reads back what the Trainer wrote to tensorboard."""
import pytest

from tests.helpers import logged_scalars, tiny_batches, tiny_trainer


def test_logged_scalars_are_the_trainer_losses_and_nonfinite_counts(tmp_path):
  trainer = tiny_trainer(str(tmp_path), train_steps=4, save_every=4, log_every=2)
  result = trainer.fit(tiny_batches())
  trainer.close()
  nonfinite = logged_scalars(tmp_path, "nonfinite_total")
  assert nonfinite == {2: 0.0, 4: 0.0}
  losses = logged_scalars(tmp_path, "loss")
  assert sorted(losses) == [2, 4]
  for step in (2, 4):
    assert losses[step] == pytest.approx(result.losses[step], rel=1e-5)
  assert logged_scalars(tmp_path, "no/such/tag") == {}
  assert logged_scalars(tmp_path / "missing", "loss") == {}
