#!/usr/bin/env bash
# A short device call (about 4 minutes) after a change: the GPU tests of some files, a few `bsmamba2 separate`
# rows (benchmarks/bench_cli.py --rows, no models-alone section) and, on cores 0-1 at the same time, a CPU A/B of
# this tree against another checkout (benchmarks/cpu_ab.py). The GPU side runs on cores 4-15.
#
#   GPU_TESTS="tests/test_x.py ..." CLI_ROWS="one file at a time,compiled" AB_BASE=.carry7/base \
#     bash scripts/gpu_short_check.sh        # carry .whl (soundfile, soxr) and AB_BASE's folder
#
# Env: GPU_TESTS (default: every GPU test), TESTS_CAP (s, default 120), CLI_ROWS (bench_cli --rows; unset = the
# defaults row only), CLI_BUDGET (s, default 120), AB_BASE (no A/B when unset), AB_MODEL (default both),
# SSD_ARGS (bench_ssd.py's arguments; no SSD table when unset), SSD_CAP (s, default 90).
# Results under $OUT: gpu_tests.log, cli/, cpu_ab/, the logs, and all of it in short_check.tar.gz.
set -u
TAG=short_check
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
say "$(nvidia-smi -L 2>&1 | head -1); $(nproc) cores"
if [ -n "${AB_BASE:-}" ]; then
  (taskset -c 0,1 timeout "${AB_CAP:-240}" python3 benchmarks/cpu_ab.py --base "$AB_BASE" --model "${AB_MODEL:-both}" \
     --threads 2 --seconds 4 --reps 2 --out "$O/cpu_ab" >"$O/cpu_ab.log" 2>&1
   echo "cpu_ab rc=$?" >>"$O/status.txt") &
fi
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 6"
# shellcheck disable=SC2086  # GPU_TESTS is a list of paths
taskset -c 4-15 timeout "${TESTS_CAP:-120}" python3 -m pytest -q -m gpu $XDIST -p no:cacheprovider -rfE \
  ${GPU_TESTS:-tests/} >"$O/gpu_tests.log" 2>&1
echo "gpu_tests rc=$?" >>"$O/status.txt"
say "gpu tests: $(tail -n 1 "$O/gpu_tests.log")"
if [ -n "${SSD_ARGS:-}" ]; then  # e.g. SSD_ARGS="--only split": a bench_ssd.py table
  # shellcheck disable=SC2086
  taskset -c 4-15 timeout "${SSD_CAP:-90}" python3 benchmarks/bench_ssd.py $SSD_ARGS >"$O/ssd.log" 2>&1
  echo "ssd rc=$?" >>"$O/status.txt"
  say "ssd done"
fi
B=${CLI_BUDGET:-120}
taskset -c 4-15 timeout $((B + 60)) python3 benchmarks/bench_cli.py --songs 10 --seconds 240 --budget "$B" \
  --rows "${CLI_ROWS:-@defaults-only}" --no-models --out "$O/cli" >"$O/cli.log" 2>&1
echo "cli rc=$?" >>"$O/status.txt"
say "cli done"
wait
cat "$O/status.txt"
grep -E "FAILED|ERROR" "$O/gpu_tests.log" | head -20
sed -n '/^| name/,/^$/p' "$O/cli/cli.md" 2>/dev/null
tail -n 4 "$O/cpu_ab.log" 2>/dev/null
tar czf "$O/short_check.tar.gz" -C "$O" --exclude=short_check.tar.gz . 2>/dev/null
