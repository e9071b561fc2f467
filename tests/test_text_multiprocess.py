"""TextEncoder under jax.distributed: 2 CPU processes x 1 device encode the same captions with the
batch sharded across processes; every process gets the full result, equal to a single process's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vp_jax.text.demo import build_demo_encoder, training_captions

pytestmark = pytest.mark.multiprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local_multiprocess.py")
WORKER = os.path.join(REPO, "tests", "text_multiprocess_worker.py")
TIMEOUT_S = 240


def test_two_processes_match_one(tmp_path):
  enc = build_demo_encoder(tmp_path / "encoder", batch_size=4)
  texts = training_captions()[:7]  # 7 captions: 2 batches of 4 (one filler row)
  (tmp_path / "texts.txt").write_text("\n".join(texts))
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")
  cmd = [sys.executable, LAUNCHER, "--num_processes", "2", "--local_devices", "1", "--timeout",
         str(TIMEOUT_S), "--", sys.executable, WORKER, "--encoder_dir", str(tmp_path / "encoder"),
         "--texts_file", str(tmp_path / "texts.txt"), "--out_dir", str(tmp_path)]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=TIMEOUT_S + 30)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  results = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines()
             if "RESULT " in line]
  assert sorted(r["process"] for r in results) == [0, 1]
  assert all(r["process_count"] == 2 and r["device_count"] == 2 for r in results)
  assert {r["model_id"] for r in results} == {enc.model_id}
  single = enc.encode(texts).embeddings
  for i in range(2):
    got = np.load(tmp_path / f"embeddings_{i}.npy")
    assert got.shape == (7, 64, 128)
    np.testing.assert_allclose(got, single, atol=2e-5, rtol=0)
