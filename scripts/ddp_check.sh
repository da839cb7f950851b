#!/usr/bin/env bash
# DDP check on a machine with 2 GPUs: the same config trained on 1 GPU and on 2 GPUs (torchrun) with the same
# global batch, seed, data and step count; reports samples/s of each, the speed-up and both loss curves.
#
#   bash scripts/ddp_check.sh [CONFIG] [STEPS] [PER_GPU_BATCH]      # defaults: study_bsmamba2 240 8
#
# Run 1: one process, batch B, grad_accum 2. Run 2: torchrun --nproc_per_node 2, batch B per rank, grad_accum 1.
# The corpus is made by scripts/gpu_train.sh --synth-only (carry .whl as for it). Output in $OUT: ddp.md,
# ddp.json, ddp_logs.tar.gz (both runs' log.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
CFG=${1:-study_bsmamba2}
STEPS=${2:-240}
B=${3:-8}
OUTDIR=${OUT:-out}
mkdir -p "$OUTDIR"
DATA=/tmp/bsm_corpus
bash scripts/gpu_train.sh --synth-only --data "$DATA" >/tmp/ddp_synth.log 2>&1 || { tail -5 /tmp/ddp_synth.log; exit 3; }
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
COMMON=("data.root=$DATA" "max_steps=$STEPS" "batch_size=$B" "log_every=20" "valid.every=1000000"
  "ckpt_every=1000000" "progress=false" "max_minutes=0")
rm -rf /tmp/ddp_1 /tmp/ddp_2
t=$(date +%s)
python3 -m bsmamba2 train "configs/$CFG.yaml" run_dir=/tmp/ddp_1 grad_accum=2 "${COMMON[@]}" >/tmp/ddp_1.out 2>&1
echo "1 GPU: rc=$? $(($(date +%s) - t)) s"
t=$(date +%s)
torchrun --standalone --nproc_per_node=2 -m bsmamba2 train "configs/$CFG.yaml" run_dir=/tmp/ddp_2 grad_accum=1 \
  "${COMMON[@]}" >/tmp/ddp_2.out 2>&1
echo "2 GPUs: rc=$? $(($(date +%s) - t)) s"
tail -n 3 /tmp/ddp_1.out /tmp/ddp_2.out
nvidia-smi -L >"$OUTDIR/ddp.md"
python3 scripts/ddp_compare.py /tmp/ddp_1/log.txt /tmp/ddp_2/log.txt --global-batch $((2 * B)) \
  --json "$OUTDIR/ddp.json" | tee -a "$OUTDIR/ddp.md"
tar czf "$OUTDIR/ddp_logs.tar.gz" -C /tmp ddp_1/log.txt ddp_2/log.txt ddp_1.out ddp_2.out 2>/dev/null
