#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU machine whose image already holds python3 with
# CUDA builds of jax, flax, optax, orbax and torch (+ torchvision), and nothing else of ours.
#
#   bash benchmarks/gpu_check.sh            # writes logs to $OUT (default /tmp/gpu_check)
#
# What it runs, each step under its own time limit so one slow step leaves time for the next:
#   1. the MAGVIT-v2 tokenizer at the paper's widths and clip size (17x128x128) against
#      magvit2-pytorch in the same layout on the same GPU, float32 (TF32 on both sides) and
#      bfloat16 (benchmarks/video_tokenizer.py; the issue's figures are the CPU ones);
#   2. the same for the `small` preset at 17x64x64 (batch 8);
#   3. the prefix LM's real train step at the `1b` preset, bfloat16, read against XLA's bfloat16
#      matmul peak (benchmarks/mfu.py), then three variants of it (mfu_variants).
# The packages such an image lacks are installed from wheels in .whl/ (not tracked) into /tmp/site,
# when that folder holds any; the set used on 2026-12-04 (Python 3.12, `pip download --no-deps`):
#   clu==0.0.12 ml_collections==1.1.0 gin-config==0.5.0 magvit2-pytorch==0.5.1
#   vector-quantize-pytorch==1.32.0 einx==0.4.3 beartype==0.23.1 frozendict==2.5.1
#   gateloop-transformer==0.2.5 hyper-connections==0.4.11 kornia==0.9.0 kornia_rs==0.2.0
#   local-attention==1.11.2 loguru==0.7.3 rotary-embedding-torch==0.9.1
#   taylor-series-linear-attention==0.2.0 torch-einops-utils==0.2.0
# (einops, jaxtyping and torchvision were already there). Elsewhere, pip install the same names.
# The image's jax/flax versions are not our pins: the log prints them.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TORCHREF_PYTHON=$(command -v "$PY")
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
    | tee "$OUT/env.log"
$PY -c "import sys, jax, flax, optax, orbax.checkpoint as o, torch
print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__,
      '| optax', optax.__version__, '| orbax', o.__version__, '| torch', torch.__version__,
      '|', jax.devices())" 2>&1 | tee -a "$OUT/env.log"

step() {  # step NAME SECONDS COMMAND...: runs it under `timeout`, log in $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -e "^W[0-9]" -e "Warning" "$OUT/$name.log" | tail -n 40
  echo "== $name: rc $rc after $((SECONDS - t0)) s"
}

# STEPS: which of the steps below to run (default all), e.g. STEPS="tokenizer_small".
STEPS=" ${STEPS:-tokenizer tokenizer_small mfu mfu_variants} "
[[ $STEPS == *" tokenizer "* ]] && step tokenizer "${TOKENIZER_LIMIT:-300}" \
    $PY benchmarks/video_tokenizer.py --configs paper --frames 17 --size 128 --batch 2 \
    --upsample_kernels 3,1 --dtypes float32,bfloat16 --torch_dtypes float32,bfloat16 \
    --repeats 5 --no_xla_cost
[[ $STEPS == *" tokenizer_small "* ]] && step tokenizer_small "${TOKENIZER_LIMIT:-300}" \
    $PY benchmarks/video_tokenizer.py --configs small --frames 17 --size 64 --batch 8 \
    --upsample_kernels 3,1 --dtypes float32,bfloat16 --torch_dtypes float32,bfloat16 \
    --repeats 10 --no_xla_cost
[[ $STEPS == *" mfu "* ]] && step mfu "${MFU_LIMIT:-180}" $PY benchmarks/mfu.py --model prefix_lm \
    --preset 1b --dtype bfloat16 --peak_dtype bfloat16 --batch_size 8 --seq_len 2048 \
    --steps 10 --sizes 4096 8192 16384 --repeats 10
# Where the 1b step's time goes: no rematerialization, a batch twice as large, and the 8b preset's
# layer shapes (width 4096, MLP 14336, 8 KV heads) at 4 layers so that it fits one GPU with AdamW.
MFU_ARGS="--model prefix_lm --dtype bfloat16 --peak_dtype bfloat16 --seq_len 2048 --steps 10
          --sizes 8192 16384 --repeats 10"
[[ $STEPS == *" mfu_variants "* ]] && {
  step mfu_1b_no_remat "${MFU_LIMIT:-180}" $PY benchmarks/mfu.py $MFU_ARGS --preset 1b \
      --batch_size 8 --override "remat_policy='none'"
  step mfu_1b_batch16 "${MFU_LIMIT:-180}" $PY benchmarks/mfu.py $MFU_ARGS --preset 1b \
      --batch_size 16
  step mfu_8b_4layers "${MFU_LIMIT:-180}" $PY benchmarks/mfu.py $MFU_ARGS --preset 8b \
      --batch_size 4 --override num_layers=4
}
true
