#!/usr/bin/env bash
# Where `bsmamba2 separate --fused` with the glue's AOTInductor packages (BSMAMBA2_GLUE_AOT=1) dies on a GPU
# (session 8: a fresh process exited with SIGSEGV on its first, cold song). Runs, each in a fresh process with
# Python's faulthandler on and a debug log, on one 60 s song:
#   1. cold caches, default warm-up thread;  2. cold caches, no warm-up thread (BSMAMBA2_CUDA_WARM_UP=0);
#   3. the caches of the run before (load only).
# Also the warm-up's GPU test. Results under $OUT: probe_N.log (stderr + faulthandler stack), status.txt.
#
#   bash scripts/gpu_aot_probe.sh          # carry .whl (soundfile, soxr)
set -u
TAG=aot_probe
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cli_warmup.py >"$O/warmup_test.log" 2>&1
echo "warm-up test rc=$?" >>"$O/status.txt"
W=/tmp/bsm_aot_probe; rm -rf $W; mkdir -p $W
python3 - "$W/song.wav" <<'PY'
import sys
import numpy as np
import soundfile as sf
sr = 44100
t = np.arange(60 * sr) / sr
x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
sf.write(sys.argv[1], np.stack([x, x * 0.9], 1).astype(np.float32), sr)
PY
probe() {  # probe N CACHE_DIR ENV...
  local n=$1 cache=$2; shift 2
  rm -rf "$W/out$n"
  env XDG_CACHE_HOME="$cache" TRITON_CACHE_DIR="$cache/triton" TORCHINDUCTOR_CACHE_DIR="$cache/inductor" \
    BSMAMBA2_GLUE_AOT=1 "$@" timeout 120 python3 -X faulthandler -m bsmamba2 -v separate "$W/song.wav" \
    --fused --batch-size 8 -o "$W/out$n" >"$O/probe_$n.log" 2>&1
  echo "probe $n ($*) rc=$?" >>"$O/status.txt"
  say "probe $n rc done"
}
probe 1 "$W/c1"
probe 2 "$W/c2" BSMAMBA2_CUDA_WARM_UP=0
probe 3 "$W/c2" BSMAMBA2_CUDA_WARM_UP=0
ls -la "$W/c2/bsmamba2/glue" >>"$O/status.txt" 2>&1
cat "$O/status.txt"
for f in "$O"/probe_*.log; do echo "== $f"; grep -v "FutureWarning\|return cls.__new__" "$f" | tail -n 25; done
