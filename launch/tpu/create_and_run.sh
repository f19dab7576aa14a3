#!/bin/bash
# Create a Cloud TPU VM pod slice, copy this repository to every worker, and train on all of them.
# Template: render it with concrete values (see launch/README.md):
#   python -m launch.render_recipe --kind=tpu --config=configs/vdm_ucf101.py \
#       --workdir=/mnt/shared/ucf --tpu_type=v5litepod-16 --zone=us-west4-a --out=run_tpu.sh
#   bash run_tpu.sh            # SKIP_CREATE=1 reuses an existing slice; DELETE_AFTER=1 deletes it
set -euo pipefail

PROJECT="${PROJECT:-__PROJECT__}"
ZONE="__ZONE__"
TPU_NAME="__TPU_NAME__"
ACCELERATOR_TYPE="__TPU_TYPE__"
RUNTIME_VERSION="__RUNTIME_VERSION__"
CONFIG="__CONFIG__"
WORKDIR="__WORKDIR__"   # must be storage every worker sees (Filestore / gcsfuse mount)
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel 2>/dev/null || pwd)"
GCLOUD=(gcloud --project="$PROJECT")

if [[ "${SKIP_CREATE:-0}" != 1 ]]; then
  "${GCLOUD[@]}" compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
fi

tar -C "$REPO_DIR" --exclude=.venv --exclude=.git -czf /tmp/vdm_jax.tgz .
"${GCLOUD[@]}" compute tpus tpu-vm scp /tmp/vdm_jax.tgz "$TPU_NAME":~/vdm_jax.tgz \
  --zone="$ZONE" --worker=all
"${GCLOUD[@]}" compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="\
mkdir -p ~/vdm_jax && tar -xzf ~/vdm_jax.tgz -C ~/vdm_jax && cd ~/vdm_jax && \
python3 -m pip install -q -U 'jax[tpu]' -e . && \
mkdir -p $WORKDIR && python3 -m launch.train --config=$CONFIG --workdir=$WORKDIR __EXTRA_ARGS__"

if [[ "${DELETE_AFTER:-0}" == 1 ]]; then
  "${GCLOUD[@]}" compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
fi
