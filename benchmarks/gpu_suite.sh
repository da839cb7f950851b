#!/usr/bin/env bash
# The one command for a GPU machine: the GPU tests and every benchmark, each stage in its own process with a
# time cap, so one failure or hang loses nothing else. Total under 8 minutes.
#
#   bash benchmarks/gpu_suite.sh          # from the repository root; carry .whl (see below)
#
# Results under $OUT (default ./bench_out):
#   SUMMARY.md    every table (Markdown, with device, date, versions and command), ready for BENCHMARKS.md
#   results.json  all rows of all stages;  suite.log  everything printed;  pytest.log  the GPU tests
# and a short summary is printed last.
#
# Wheels: if .whl/ holds wheels (soundfile, soxr, ... and mamba_ssm-*.whl from scripts/build_mamba_wheel.sh),
# they are installed into /tmp/bsm_site (no network needed). mamba-ssm is only the baseline of the SSD
# benchmark; without it that comparison is skipped and everything else runs.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export OUT="${OUT:-$ROOT/bench_out}"
mkdir -p "$OUT/stages"
rm -f "$OUT"/stages/*.json "$OUT/stages/status.txt"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/bsm_triton_cache}"
PY="${PY:-python3}"
LOG="$OUT/suite.log"
: >"$LOG"
T0=$(date +%s)
TOTAL=${SUITE_SECONDS:-470}  # hard budget for all stages together

log() { echo "[suite +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((TOTAL - ($(date +%s) - T0))); }

# stage NAME CAP CMD... : run CMD with at most CAP seconds (less if the suite budget is nearly spent)
stage() {
  local name=$1 cap=$2
  shift 2
  local rem
  rem=$(left)
  if [ "$rem" -lt 20 ]; then
    log "stage $name: skipped (suite budget spent)"
    echo "$name skipped" >>"$OUT/stages/status.txt"
    return
  fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  log "stage $name (cap ${cap}s)"
  local t=$(date +%s)
  BENCH_BUDGET=$((cap - 15)) timeout --signal=TERM --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "$name rc=$rc $(($(date +%s) - t))s" >>"$OUT/stages/status.txt"
  log "stage $name: rc=$rc after $(($(date +%s) - t))s"
}

# ---- setup: carried wheels, environment ------------------------------------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bsm_site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/bsm_site:${PYTHONPATH:-}" && export MAMBA_SITE=/tmp/bsm_site
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
{
  nvidia-smi -L 2>&1
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -c "import soundfile, soxr; print('soundfile/soxr ok')"
} 2>&1 | tee -a "$LOG"

# ---- 1. compile every kernel variant in parallel (fills Triton's disk cache) ---------------------------------------
K=${PREWARM_PROCS:-12}
prewarm_all() {
  local pids=()
  for i in $(seq 0 $((K - 1))); do
    "$PY" benchmarks/bench_ssd.py --prewarm "$i" --of "$K" >"$OUT/stages/prewarm_$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  cat "$OUT"/stages/prewarm_*.log
  rm -f "$OUT"/stages/prewarm_*.log
}
export -f prewarm_all
export PY K OUT
stage prewarm "${CAP_PREWARM:-90}" bash -c prewarm_all

# ---- 2. GPU tests (parallel workers compile in parallel; default launch configs, no autotuning) --------------------
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 6"
BSMAMBA2_SSD_AUTOTUNE=0 stage tests "${CAP_TESTS:-75}" bash -c \
  "set -o pipefail; $PY -m pytest -q -m gpu $XDIST -p no:cacheprovider tests 2>&1 | tee '$OUT/pytest.log'"

# ---- 3-6. benchmarks ----------------------------------------------------------------------------------------------
stage ssd "${CAP_SSD:-110}" "$PY" benchmarks/bench_ssd.py
stage train "${CAP_TRAIN:-85}" "$PY" benchmarks/bench_train.py
stage infer "${CAP_INFER:-75}" "$PY" benchmarks/bench_infer.py
stage cpu "${CAP_CPU:-30}" "$PY" benchmarks/bench_cpu.py --seconds 16
# optional, with whatever time is left: torch.compile of the plain-PyTorch SSD
if [ "$(left)" -gt 60 ]; then
  stage ssd_compiled "$(($(left) - 10))" "$PY" benchmarks/bench_ssd.py --only compiled
fi

# ---- summary --------------------------------------------------------------------------------------------------------
log "done; total $(($(date +%s) - T0))s"
grep -E "passed|failed|error" "$OUT/pytest.log" 2>/dev/null | tail -3
"$PY" benchmarks/common.py --summary 2>&1 | tee "$OUT/summary.txt"
echo "tables: $OUT/SUMMARY.md  rows: $OUT/results.json  log: $OUT/suite.log"
