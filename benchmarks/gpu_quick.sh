#!/usr/bin/env bash
# A shorter GPU run than gpu_suite.sh, for one question at a time: the GPU tests with full failure output, and
# any of the benchmark scripts with their own arguments. Results under $OUT (default ./bench_out).
#
#   bash benchmarks/gpu_quick.sh tests                       # pytest -m gpu, failures in full (pytest.log)
#   bash benchmarks/gpu_quick.sh "train --profile recompute"  # bench_train.py with arguments
#   bash benchmarks/gpu_quick.sh tests "train --only fused" "infer"
#
# Each stage gets STAGE_CAP seconds (default 240). Carry .whl (soundfile, soxr, mamba_ssm wheels) as for
# gpu_suite.sh.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export OUT="${OUT:-$ROOT/bench_out}" BENCH_STAGES="$OUT"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/bsm_triton_cache}"
PY="${PY:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bsm_site \
    .whl/*.whl >/dev/null 2>&1 && export PYTHONPATH="/tmp/bsm_site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
nvidia-smi -L
for spec in "$@"; do
  name=${spec%% *}
  args=""
  [ "$name" != "$spec" ] && args=${spec#* }
  t=$(date +%s)
  cap=${STAGE_CAP:-240}
  if [ "$name" = tests ]; then
    X=""
    "$PY" -c "import xdist" 2>/dev/null && X="-n 8"
    timeout "$cap" "$PY" -m pytest -m gpu $X -p no:cacheprovider -rfE --tb=short -q \
      tests/test_ssd_triton.py tests/test_fused_mixer.py >"$OUT/pytest.log" 2>&1
    echo "== tests rc=$? $(($(date +%s) - t))s: $(tail -1 "$OUT/pytest.log")"
  else
    # shellcheck disable=SC2086
    BENCH_BUDGET=$((cap - 15)) timeout "$cap" "$PY" "benchmarks/bench_$name.py" $args >"$OUT/$name.log" 2>&1
    echo "== $name rc=$? $(($(date +%s) - t))s"
  fi
done
