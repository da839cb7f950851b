#!/usr/bin/env bash
# Session 10's closing device call, and the next session's first (about 5 minutes): the GPU tests of the
# session's changes, then the whole GPU table of issue 12 in one run (benchmarks/bench_cli.py: `bsmamba2
# separate` defaults, the fast start and exit off, no pinned blocks, the stand-in warm-up; the models alone with
# the BS-RoFormer baseline, htdemucs and the paper config), then where one song's wall time goes
# (scripts/profile_one_song.py). Carry .whl (soundfile, soxr, demucs, julius).
# Results under $OUT: gpu_tests.log, cli/ (cli.json, cli.md), cli.log, profile.json, profile.tar.gz, status.txt.
set -u
TAG=s10
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
# the GPU tests of what this call times (the packed checkpoint copy, the fast start and exit, the writers)
timeout "${TESTS_CAP:-60}" python3 -m pytest -q -m gpu -p no:cacheprovider -rfE tests/test_checkpoints_registry.py \
  tests/test_cli_startup.py tests/test_batchrun.py tests/test_cli_warmup.py >"$O/gpu_tests.log" 2>&1
echo "gpu_tests rc=$?" >>"$O/status.txt"
say "gpu tests: $(tail -n 1 "$O/gpu_tests.log")"
taskset -c 4-15 timeout 300 python3 benchmarks/bench_cli.py --songs 10 --seconds 240 --reps 3 \
  --budget "${CLI_BUDGET:-200}" --rows "fast start and exit off,no pinned blocks,stand-in forward" --paper --skip-compiled \
  --out "$O/cli" >"$O/cli.log" 2>&1
echo "cli rc=$?" >>"$O/status.txt"
say "cli done"
taskset -c 4-15 timeout -s INT "${PROFILE_CAP:-70}" python3 scripts/profile_one_song.py run --seconds 240 --reps 2 \
  --out "$O" >>"$O/status.txt" 2>&1
echo "profile rc=$?" >>"$O/status.txt"
say "profile done"
cat "$O/cli/cli.md" 2>/dev/null | head -n 60
