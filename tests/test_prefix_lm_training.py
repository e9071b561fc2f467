"""The prefix LM learns through the real trainer: a copy task over the inpainting layout (visual
input -> the same codes as output, random text in the text slots, condition dropout on), then
greedy KV-cache generation from the trained weights reproduces held-out inputs."""
import jax
import numpy as np
import pytest
from flax import nnx

from vp_jax.checkpoint.manager import CheckpointError

from vp_jax.generate.sampling import Sampler, SamplingConfig
from vp_jax.models.prefix_lm.config import preset
from vp_jax.models.prefix_lm.load import load_prefix_lm
from vp_jax.models.prefix_lm.model import PrefixLM
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import DEFAULT_RULES
from vp_jax.sequence import layout as L
from vp_jax.sequence.synthetic_tokens import copy_task_batches
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import Trainer, TrainerConfig

CFG = preset("tiny")
LAYOUT = L.make_layout(L.Task.INPAINTING, vocab=CFG.vocab, with_text=True, text_length=8,
                       latent_hw=(2, 4))                        # 40 codes in, 40 out; length 98
STEPS = 120
TARGET_ACCURACY = 0.98   # measured: 1.000 after 120 steps (loss 8.3 -> ~0.005)


def test_tiny_preset_learns_to_copy_and_generates_the_copy(tmp_path):
  mesh = make_mesh(MeshConfig(data=2), jax.devices()[:2])
  trainer = Trainer(
      lambda rngs: PrefixLM(CFG, rngs=rngs),
      TrainerConfig(train_steps=STEPS, log_every=20, save_every=STEPS, progress=False,
                    eval_batches=2,
                    optimizers={"model": OptimizerConfig(learning_rate=1e-2, warmup_steps=10)}),
      mesh, DEFAULT_RULES, workdir=str(tmp_path))
  batches = lambda seed: copy_task_batches(LAYOUT, 16, text_dim=CFG.text_dim, num_codes=16,
                                           seed=seed)
  result = trainer.fit(batches(0))
  metrics = trainer.evaluate(result.state, batches(1234))      # held-out examples
  trainer.close()
  first, last = result.losses[min(result.losses)], result.losses[max(result.losses)]
  assert first > 4.0 and last < 0.1, (first, last)
  assert metrics["accuracy"] >= TARGET_ACCURACY, metrics

  # Generation loads the weights back from the checkpoint (no optimizer state needed).
  model, step = load_prefix_lm(str(tmp_path), CFG, mesh)
  assert step == STEPS
  loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               loaded, jax.device_get(result.state.params))
  held_out = next(batches(999))
  prefix = held_out["tokens"][:4, :LAYOUT.prefix_length]
  out = Sampler(model, mesh, DEFAULT_RULES).sample(
      LAYOUT, prefix, key=jax.random.key(0), config=SamplingConfig(temperature=0.0),
      text=held_out["text_embeddings"][:4], text_mask=held_out["text_mask"][:4])
  grids = LAYOUT.extract(out)
  match = np.mean(grids[L.VIDEO_OUT] == grids[L.VIDEO_IN])
  assert match >= TARGET_ACCURACY, match


def test_load_prefix_lm_without_a_checkpoint_is_a_clear_error(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
  with pytest.raises(CheckpointError, match="No committed checkpoint"):
    load_prefix_lm(str(tmp_path), CFG, mesh)
