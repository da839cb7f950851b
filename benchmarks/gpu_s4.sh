#!/usr/bin/env bash
# Issue 13 on one GPU in under 6 minutes: the GPU tests of the fused mixer, the SSD microbenchmark against
# mamba-ssm, and the training step (old path, new path, BS-RoFormer; study config). Each stage runs in its own
# process with a time cap, so a fault or hang loses only that stage; results are merged after every stage.
#
#   bash benchmarks/gpu_s4.sh        # from the repository root; carry .whl (soundfile, soxr, mamba_ssm wheels)
#
# .whl/: soundfile/soxr wheels, and mamba_ssm-*.whl from scripts/build_mamba_wheel.sh (pure Python, ~100 KB).
# Results under $OUT (default ./bench_out): SUMMARY.md (tables with device, date, versions, command),
# results.json (all rows), suite.log (everything printed), pytest.log, summary.txt.
# Stages: (1) GPU tests (xdist; GPU_TESTS picks the files) while mamba-ssm's autotuning candidates compile in the background;
# (2) SSD microbenchmark (ours with the shipped configurations, both directions in one launch, mamba-ssm);
# (3) training steps, one process per model: BS-RoFormer, BSMamba2 old path, new path (paper, batch 5 × 8 s,
# recompute), the study config (dim 128, depth 4, batch 8 × 8 s) old and new, and the new path with the
# Triton conv kernel (mamba2.TRITON_CONV) in place of the compiled conv.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export OUT="${OUT:-$ROOT/bench_out}"
export BENCH_STAGES="${BENCH_STAGES:-/tmp/bsm_s4_stages}"
mkdir -p "$OUT" "$BENCH_STAGES"
rm -f "$BENCH_STAGES"/*.json "$BENCH_STAGES"/*.log "$BENCH_STAGES/status.txt"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/bsm_triton_cache}"
PY="${PY:-python3}"
LOG="$OUT/suite.log"
: >"$LOG"
T0=$(date +%s)
TOTAL=${SUITE_SECONDS:-335} # all stages together; the device call's limit is 6 minutes
# S4_STAGES: which stages, in this order (default all); e.g. S4_STAGES="study_new study_old" for a second call
S4_STAGES=" ${S4_STAGES:-tests ssd train_new train_old train_roformer study_new study_old train_conv} "
want() { [[ "$S4_STAGES" == *" $1 "* ]]; }

log() { echo "[s4 +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((TOTAL - ($(date +%s) - T0))); }

# stage NAME CAP CMD... : CMD with at most CAP seconds (less when the budget is nearly spent); output to the
# log and to the terminal as it comes, so a timeout still returns what ran
stage() {
  local name=$1 cap=$2
  shift 2
  want "$name" || return 0
  local rem
  rem=$(left)
  if [ "$rem" -lt 20 ]; then
    log "stage $name: skipped (budget spent)"
    echo "$name skipped" >>"$BENCH_STAGES/status.txt"
    return
  fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  log "stage $name (cap ${cap}s)"
  local t
  t=$(date +%s)
  BENCH_BUDGET=$((cap - 10)) timeout --signal=TERM --kill-after=5 "$cap" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $(($(date +%s) - t))s" >>"$BENCH_STAGES/status.txt"
  log "stage $name: rc=$rc after $(($(date +%s) - t))s"
  "$PY" benchmarks/common.py --summary --quiet >>"$LOG" 2>&1 # $OUT holds the results so far
}

# ---- setup ---------------------------------------------------------------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bsm_site \
    .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/bsm_site:${PYTHONPATH:-}" && export MAMBA_SITE=/tmp/bsm_site
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
{
  nvidia-smi -L 2>&1
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_capability())"
  "$PY" -c "import soundfile, soxr; print('soundfile/soxr ok')"
  ls "$MAMBA_SITE"/mamba_ssm >/dev/null 2>&1 && echo "mamba-ssm wheel installed" || echo "no mamba-ssm wheel: SSD baseline skipped"
} 2>&1 | tee -a "$LOG"

# ---- 1. GPU tests, while mamba-ssm's candidates compile in the background ------------------------------------
K=${PREWARM_PROCS:-6}
PRE=()
want ssd || K=0
for i in $(seq 0 $((K - 1))); do
  timeout 95 "$PY" benchmarks/bench_ssd.py --prewarm "$i" --of "$K" >"$BENCH_STAGES/prewarm_$i.log" 2>&1 &
  PRE+=($!)
done
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 6"
# GPU_TESTS: which test files (default the fused mixer's and the SSD's; GPU_TESTS=tests for every GPU test)
GPU_TESTS=${GPU_TESTS:-tests/test_fused_mixer_gpu.py tests/test_fused_mixer.py tests/test_ssd_triton.py}
stage tests "${CAP_TESTS:-100}" bash -c \
  "set -o pipefail; $PY -m pytest -q -m gpu $XDIST -p no:cacheprovider $GPU_TESTS 2>&1 | tee '$OUT/pytest.log'"
for p in "${PRE[@]}"; do wait "$p"; done
cat "$BENCH_STAGES"/prewarm_*.log >>"$LOG" 2>/dev/null
rm -f "$BENCH_STAGES"/prewarm_*.log

# ---- 2. SSD microbenchmark -------------------------------------------------------------------------------------
stage ssd "${CAP_SSD:-60}" "$PY" benchmarks/bench_ssd.py --quick

# ---- 3. training steps, one process per model (a fault ends only its own) -------------------------------------
stage train_new "${CAP_TRAIN:-60}" "$PY" benchmarks/bench_train.py --tag new --only "paper new path (paired directions; recompute)"
stage train_old "${CAP_TRAIN:-60}" "$PY" benchmarks/bench_train.py --tag old --only "paper old path" \
  --profile "${PROFILE_OLD:-none}"  # e.g. PROFILE_OLD="old path (fused": a kernel table of the default path
stage train_roformer "${CAP_ROFORMER:-45}" "$PY" benchmarks/bench_train.py --tag roformer --only "BS-RoFormer"
stage study_new "${CAP_STUDY:-40}" "$PY" benchmarks/bench_train.py --tag study_new --only "study new path"
stage study_old "${CAP_STUDY:-40}" "$PY" benchmarks/bench_train.py --tag study_old --only "study old path"
stage train_conv "${CAP_TRAIN:-60}" "$PY" benchmarks/bench_train.py --tag conv --only "new path + Triton conv"

# ---- summary ---------------------------------------------------------------------------------------------------
log "done; total $(($(date +%s) - T0))s"
cat "$BENCH_STAGES/status.txt"
grep -E "passed|failed|error" "$OUT/pytest.log" 2>/dev/null | tail -3
"$PY" benchmarks/common.py --summary 2>&1 | tee "$OUT/summary.txt"
echo "tables: $OUT/SUMMARY.md  rows: $OUT/results.json  log: $OUT/suite.log"
