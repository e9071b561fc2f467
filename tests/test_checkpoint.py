"""Checkpoint errors: missing directory, partial (uncommitted) step, incompatible model."""
import dataclasses
import shutil

import pytest

from tests.helpers import TINY, tiny_batches, tiny_trainer
from vp_jax.checkpoint.manager import CheckpointError, Checkpointer


def test_missing_checkpoint_dir_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    Checkpointer(tmp_path / "nope", create=False)
  empty = Checkpointer(tmp_path / "empty")
  with pytest.raises(CheckpointError, match="No committed checkpoint in"):
    empty.restore(abstract_state={})
  empty.close()


@pytest.fixture
def saved(tmp_path):
  trainer = tiny_trainer(tmp_path, train_steps=8, save_every=4)
  trainer.fit(tiny_batches())
  trainer.close()
  return tmp_path


def test_partial_checkpoint_without_commit_marker(saved):
  step_dir = saved / "checkpoints" / "8"
  (step_dir / "_CHECKPOINT_METADATA").unlink()
  trainer = tiny_trainer(saved, train_steps=8)
  with pytest.raises(CheckpointError, match=r"checkpoints/8 is partial: missing "
                                            r"\['_CHECKPOINT_METADATA'\]"):
    trainer.checkpointer.restore(trainer.abstract_state(), step=8)


def test_unfinished_write_is_not_a_committed_step(saved):
  ckpt = saved / "checkpoints"
  shutil.move(ckpt / "8", ckpt / "8.orbax-checkpoint-tmp-123")
  trainer = tiny_trainer(saved, train_steps=8)
  assert trainer.checkpointer.latest_step() == 4        # resume skips the unfinished step
  with pytest.raises(CheckpointError, match=r"No committed checkpoint for step 8 .*unfinished "
                                            r"write exists: \['8.orbax-checkpoint-tmp-123'\]"):
    trainer.checkpointer.restore(trainer.abstract_state(), step=8)
  assert trainer.fit(tiny_batches()).start_step == 4


def test_incompatible_checkpoint_names_the_parameter(saved):
  wider = dataclasses.replace(TINY, mlp_dim=128)
  trainer = tiny_trainer(saved, model=wider, train_steps=8)
  with pytest.raises(CheckpointError, match=r"mlp_in.*kernel|does not match"):
    trainer.init_or_restore()


def test_relative_checkpoint_dir_is_made_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  trainer = tiny_trainer("runs/rel", train_steps=2, save_every=2)
  trainer.fit(tiny_batches())
  assert str(trainer.checkpointer.directory) == str(tmp_path / "runs" / "rel" / "checkpoints")
  assert trainer.checkpointer.all_steps() == [2]


def test_keep_newest_n_plus_every_kth(tmp_path):
  trainer = tiny_trainer(tmp_path, train_steps=12, save_every=2, keep_checkpoints=2,
                         keep_period=4, async_checkpointing=False)
  trainer.fit(tiny_batches())
  assert trainer.checkpointer.all_steps() == [4, 8, 10, 12]


def test_reached_preemption_is_false_in_one_process(tmp_path):
  """Without jax.distributed there is no preemption sync service: never a sync point (the
  single-process trainer reacts to SIGTERM itself; the multi-host path: tests/test_multiprocess.py)."""
  ckpt = Checkpointer(tmp_path / "c")
  try:
    assert [ckpt.reached_preemption(s) for s in (0, 1, 7, 10 ** 6)] == [False] * 4
  finally:
    ckpt.close()
