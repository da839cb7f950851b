#!/usr/bin/env bash
# Session 12's issue-13 device call (about 8 minutes), in one run on one GPU:
#   1. the GPU tests of the kernel blocks (tests/test_mixer_triton.py, test_train_build.py -m gpu): forward and
#      every gradient against the plain-PyTorch reference, fp32 and bf16, 1 / 62 / 100 / 801 steps, both save
#      modes; a converted official model through them;
#   2. the training step (benchmarks/bench_train.py): the old path (fused glue per direction) and the kernel
#      blocks at the paper and study configs, and the BS-RoFormer baseline, the kernel rows profiled;
#   3. the SSD microbenchmark against mamba-ssm (benchmarks/bench_ssd.py --quick).
# Carry .whl (soundfile, soxr, mamba_ssm from scripts/build_mamba_wheel.sh). Results under $OUT.
set -u
TAG=s12
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >"$O/status.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >>"$O/status.txt" 2>&1
if [ "${DIAG:-0}" = 1 ]; then  # per-tensor errors at short lengths (scripts/ssd_short_check.py)
  timeout -s INT "${DIAG_CAP:-60}" python3 scripts/ssd_short_check.py >"$O/diag.log" 2>&1
  say "diag done"
  cat "$O/diag.log" | tail -n 30
fi
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout -s INT "${TEST_CAP:-110}" python3 -m pytest -q -m gpu -p no:cacheprovider -rf \
    ${TESTS:-tests/test_mixer_triton.py tests/test_train_build.py} >"$O/tests.log" 2>&1
  echo "tests rc=$?" >>"$O/status.txt"
  say "tests done"
  grep -E "passed|failed|FAILED|Error" "$O/tests.log" | cut -c1-300 | tail -n 30
fi
if [ "${MIXER_SWEEP:-0}" = 1 ]; then  # the conv kernels' launch shapes (benchmarks/bench_mixer.py); the best are used below
  timeout -s INT "${MIXER_CAP:-100}" python3 benchmarks/bench_mixer.py --budget "${MIXER_BUDGET:-85}" >"$O/mixer.log" 2>&1
  echo "mixer rc=$?" >>"$O/status.txt"
  say "mixer sweep done"
  grep -E '^\[mixer\] best|^MIXER_TILES' "$O/mixer.log" | cut -c1-300
  if [ -s "$O/mixer_tiles.json" ] && [ "$(cat "$O/mixer_tiles.json")" != "{}" ]; then
    export BSMAMBA2_MIXER_TILES="$(cat "$O/mixer_tiles.json")"
    echo "BSMAMBA2_MIXER_TILES=$BSMAMBA2_MIXER_TILES" >>"$O/status.txt"
  fi
  rm -f "$O/mixer_tiles.json"
fi
ROWS="paper old path (fused glue per direction; recompute),BS-RoFormer,paper kernel blocks,study old path (fused glue per direction),study kernel blocks"
timeout -s INT "${TRAIN_CAP:-290}" python3 benchmarks/bench_train.py --only "${ONLY:-$ROWS}" \
  --profile "${PROFILE:-kernel blocks (one Function per block; saves its activations),study old path}" \
  --budget "${TRAIN_BUDGET:-270}" --steps 6 >"$O/train.log" 2>&1
echo "train rc=$?" >>"$O/status.txt"
say "train done"
grep -E '^\[train\] (train|profile|kernels):' "$O/train.log" | cut -c1-300 | head -n 80
if [ "${SKIP_SSD:-0}" != 1 ]; then
  timeout -s INT "${SSD_CAP:-140}" python3 benchmarks/bench_ssd.py --quick --budget "${SSD_BUDGET:-130}" >"$O/ssd.log" 2>&1
  echo "ssd rc=$?" >>"$O/status.txt"
  say "ssd done"
  grep -E '^\[ssd\]' "$O/ssd.log" | cut -c1-300 | head -n 30
fi
rm -f "$O/pip.log" "$O/stages/peaks.json"  # at most 8 files come back
cat "$O/status.txt"
