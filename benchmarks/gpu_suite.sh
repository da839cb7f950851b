#!/usr/bin/env bash
# The one command for a GPU machine: kernel triage, the GPU tests and every benchmark, each stage in its own
# process with a time cap, so one failure, fault or hang loses nothing else. Total under 8 minutes.
#
#   bash benchmarks/gpu_suite.sh          # from the repository root; carry .whl (see below)
#
# Results under $OUT (default ./bench_out):
#   SUMMARY.md    every table (Markdown, with device, date, versions and command), ready for BENCHMARKS.md
#   results.json  all rows of all stages;  suite.log  everything printed;  pytest.log  the GPU tests
#   summary.txt   the short summary, also printed last
#
# Stages: (1) triage: every launch variant of the fused SSD kernels runs in its own process at full size and is
# checked against float64 (faulting ones are retried with DISABLE_MMA_V3=1 and with the CUDA toolkit's ptxas),
# while mamba-ssm's autotuning candidates compile in parallel; later stages use only variants that passed
# (exported as BSMAMBA2_SSD_CONFIGS / BSMAMBA2_SSD_CHUNKS, plus a workaround's variables if one was needed).
# (2) GPU tests. (3) SSD microbenchmark vs mamba-ssm. (4) training step. (5) inference. (6) CPU inference.
# (7) torch.compile of the plain-PyTorch SSD (compiled untimed in the background during stage 2).
#
# Wheels: if .whl/ holds wheels (soundfile, soxr, ... and mamba_ssm-*.whl from scripts/build_mamba_wheel.sh),
# they are installed into /tmp/bsm_site (no network needed). mamba-ssm is only the baseline of the SSD
# benchmark; without it that comparison is skipped and everything else runs.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export OUT="${OUT:-$ROOT/bench_out}"
export BENCH_STAGES="${BENCH_STAGES:-/tmp/bsm_stages}" # per-stage files; $OUT gets the merged results
mkdir -p "$OUT" "$BENCH_STAGES"
rm -f "$BENCH_STAGES"/*.json "$BENCH_STAGES"/*.log "$BENCH_STAGES/status.txt"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/bsm_triton_cache}"
PY="${PY:-python3}"
LOG="$OUT/suite.log"
: >"$LOG"
T0=$(date +%s)
TOTAL=${SUITE_SECONDS:-470} # hard budget for all stages together

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
    echo "$name skipped" >>"$BENCH_STAGES/status.txt"
    return
  fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  log "stage $name (cap ${cap}s)"
  local t
  t=$(date +%s)
  BENCH_BUDGET=$((cap - 15)) timeout --signal=TERM --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "$name rc=$rc $(($(date +%s) - t))s" >>"$BENCH_STAGES/status.txt"
  log "stage $name: rc=$rc after $(($(date +%s) - t))s"
  "$PY" benchmarks/common.py --summary --quiet >>"$LOG" 2>&1 # $OUT always holds the results so far
}

# ---- setup: carried wheels, environment ------------------------------------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bsm_site \
    .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/bsm_site:${PYTHONPATH:-}" && export MAMBA_SITE=/tmp/bsm_site
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
{
  nvidia-smi -L 2>&1
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -c "import soundfile, soxr; print('soundfile/soxr ok')"
  ls /usr/local/cuda/bin/ptxas 2>&1 && /usr/local/cuda/bin/ptxas --version 2>&1 | tail -1
} 2>&1 | tee -a "$LOG"

# ---- 1. triage our kernels (own processes) while mamba-ssm's candidates compile ------------------------------------
K=${PREWARM_PROCS:-8}
triage_and_prewarm() {
  "$PY" benchmarks/bench_ssd.py --triage-all --procs "${TRIAGE_PROCS:-8}" --budget "$BENCH_BUDGET" &
  local tp=$!
  local pids=()
  for i in $(seq 0 $((K - 1))); do
    "$PY" benchmarks/bench_ssd.py --prewarm "$i" --of "$K" >"$BENCH_STAGES/prewarm_$i.log" 2>&1 &
    pids+=($!)
  done
  wait "$tp"
  for p in "${pids[@]}"; do wait "$p"; done
  cat "$BENCH_STAGES"/prewarm_*.log
  rm -f "$BENCH_STAGES"/prewarm_*.log
}
export -f triage_and_prewarm
export PY K
stage triage "${CAP_TRIAGE:-105}" bash -c triage_and_prewarm
if [ -f "$BENCH_STAGES/ssd_safe.json" ]; then
  eval "$("$PY" - <<'EOF'
import json, os, shlex
s = json.load(open(os.path.join(os.environ["BENCH_STAGES"], "ssd_safe.json")))
configs = {k: s["configs"].get(k, []) for k in ("fwd_single", "bwd_single", "fwd_chunked", "bwd_chunked")}
print("export BSMAMBA2_SSD_CONFIGS=" + shlex.quote(json.dumps(configs)))
print("export BSMAMBA2_SSD_CHUNKS=" + shlex.quote(json.dumps(s["chunks"])))
for k, v in s.get("env", {}).items():
    print(f"export {k}=" + shlex.quote(v))
EOF
)"
  log "fused SSD variants for later stages: configs=$BSMAMBA2_SSD_CONFIGS chunks=$BSMAMBA2_SSD_CHUNKS" \
    "workaround env: DISABLE_MMA_V3=${DISABLE_MMA_V3:-} TRITON_PTXAS_PATH=${TRITON_PTXAS_PATH:-}"
else
  log "no triage result: later stages use the library's default SSD configurations"
fi

# ---- 2. GPU tests (parallel workers compile in parallel; the first triaged configuration, no autotuning) ----------
# In the background meanwhile (the tests use little of the GPU): torch.compile of the plain-PyTorch SSD at the
# real shapes, untimed, so that stage 7 finds inductor's caches warm.
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 6"
timeout "${CAP_TESTS:-60}" "$PY" benchmarks/bench_ssd.py --only compiled --warm >>"$LOG" 2>&1 &
WARM_PID=$!
BSMAMBA2_SSD_AUTOTUNE=0 stage tests "${CAP_TESTS:-60}" bash -c \
  "set -o pipefail; $PY -m pytest -q -m gpu $XDIST -p no:cacheprovider tests/test_ssd_triton.py 2>&1 | tee '$OUT/pytest.log'"
wait "$WARM_PID"

# ---- 3-6. benchmarks ----------------------------------------------------------------------------------------------
stage ssd "${CAP_SSD:-90}" "$PY" benchmarks/bench_ssd.py
stage train "${CAP_TRAIN:-75}" "$PY" benchmarks/bench_train.py
stage infer "${CAP_INFER:-60}" "$PY" benchmarks/bench_infer.py
stage cpu "${CAP_CPU:-25}" "$PY" benchmarks/bench_cpu.py --seconds 16
# ---- 7. torch.compile of the plain-PyTorch SSD (caches warmed during stage 2), with what is left ---------------
stage ssd_compiled "${CAP_COMPILED:-35}" "$PY" benchmarks/bench_ssd.py --only compiled

# ---- summary --------------------------------------------------------------------------------------------------------
log "done; total $(($(date +%s) - T0))s"
grep -E "passed|failed|error" "$OUT/pytest.log" 2>/dev/null | tail -3
"$PY" benchmarks/common.py --summary 2>&1 | tee "$OUT/summary.txt"
echo "tables: $OUT/SUMMARY.md  rows: $OUT/results.json  log: $OUT/suite.log"
