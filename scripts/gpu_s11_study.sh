#!/usr/bin/env bash
# Session 11's last device call (issue 13, about 4 minutes): the study config's training step (dim 128, depth 4,
# batch 8 x 8 s, bf16) as shipped (fused glue per direction), profiled, beside the whole model under
# torch.compile (training's `compile: true`) over the eager blocks and over the fused glue, in one run.
# Carry .whl (soundfile, soxr). Results under $OUT: train.log (every row as it is measured), stages/.
set -u
TAG=s11
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >"$O/status.txt" 2>&1
timeout -s INT "${TRAIN_CAP:-270}" python3 benchmarks/bench_train.py --only "${ONLY:-study old path (fused glue per direction),whole model}" \
  --profile "study old path (fused glue,whole model torch.compile (eager" --budget "${TRAIN_BUDGET:-250}" --steps 8 \
  >"$O/train.log" 2>&1
echo "train rc=$?" >>"$O/status.txt"
say "train done"
grep -E '^\[train\] (train|profile|kernels):' "$O/train.log" | cut -c1-400 | head -n 60
