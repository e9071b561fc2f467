#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: every worker runs the same command (multi-controller JAX).
#
#   TPU_NAME=my-v5p-128 ZONE=us-east5-a MODEL_DIR=gs://bucket/run1 launch/tpu_pod.sh \
#       --gin_file=models/toy_lm.gin --gin.TRAIN_STEPS=100000
#
# Prerequisites: a TPU VM slice created with `gcloud compute tpus tpu-vm create`, this repository
# copied to every worker (the scp below does it), and MODEL_DIR on GCS (Orbax writes checkpoints
# from all hosts). jax.distributed auto-detects the slice (VP_JAX_AUTO_DISTRIBUTED=1); preemption
# notices reach the trainer through jax's preemption sync point and it saves before stopping.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${MODEL_DIR:?set MODEL_DIR (gs://...)}"
REPO_DIR=${REPO_DIR:-vp_jax}
cd "$(dirname "$0")/.."
gcloud compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all . "$TPU_NAME:$REPO_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e; cd $REPO_DIR
  [ -x .venv/bin/python ] || (python3.11 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[tpu]')
  VP_JAX_AUTO_DISTRIBUTED=1 .venv/bin/python launch/train.py --gin_file=platforms/tpu_pod.gin \
      --gin.MODEL_DIR=\"'$MODEL_DIR'\" $*"
