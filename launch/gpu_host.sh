#!/usr/bin/env bash
# Train on one GPU host (all its GPUs in one process, FSDP over them: gin/platforms/gpu_host.gin).
#
#   MODEL_DIR=/data/runs/run1 launch/gpu_host.sh --gin_file=models/toy_lm.gin --gin.TRAIN_STEPS=1000
#
# Needs a CUDA build of jaxlib matching the pinned jax: `pip install "jax[cuda12]==0.10.2"` in the
# venv (not part of the default CPU install). For several GPU hosts, run the same command on each
# with VP_JAX_COORDINATOR / VP_JAX_NUM_PROCESSES / VP_JAX_PROCESS_ID set (vp_jax/distributed.py).
set -euo pipefail
: "${MODEL_DIR:?set MODEL_DIR}"
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec "$PY" launch/train.py --gin_file=platforms/gpu_host.gin --gin.MODEL_DIR="'$MODEL_DIR'" "$@"
