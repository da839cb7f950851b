#!/usr/bin/env bash
# Bisect the SIGSEGV of the AOTInductor glue (BSMAMBA2_GLUE_AOT=1) on a GPU (session 8: every
# `bsmamba2 separate --fused` died in the constructor of torch's C++ AOTIModelPackageLoader at the first
# time-path block, while the GPU test that builds and loads packages in pytest passed). Each probe is a fresh
# process with faulthandler and scripts/segv_bt.c preloaded (the native frames):
#   1. the CLI, cold caches, one 60 s song: builds the first package, then (session 8) crashes loading it;
#   2. torch's C++ loader on that package in a bare process (CUDA touched first / not, index 0 / -1);
#   3. torch._inductor.aoti_load_package on it;
#   4. a package at the same signature built and loaded by GlueCall in a bare process;
#   5. Separator(fused=True) without the CLI; 6. the pytest GPU test of the packages.
# Results under $OUT: bisect.log (all probes), pkg_listing.txt. Runs ~2-4 min; safe beside a training run.
#
#   bash scripts/gpu_aot_bisect.sh     # carry .whl (soundfile, soxr)
set -u
TAG=aot_bisect
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
LOG="$O/bisect.log"
W=/tmp/bsm_aot_bisect; rm -rf $W; mkdir -p $W
gcc -shared -fPIC -O1 -o $W/segv_bt.so scripts/segv_bt.c || { echo "no gcc" >>"$LOG"; exit 1; }
python3 - "$W/song.wav" <<'PY'
import sys
import numpy as np
import soundfile as sf
sr = 44100
t = np.arange(60 * sr) / sr
x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
sf.write(sys.argv[1], np.stack([x, x * 0.9], 1).astype(np.float32), sr)
PY
probe() {  # probe NAME CMD...
  local name=$1; shift
  echo "==== $name: $*" >>"$LOG"
  LD_PRELOAD=$W/segv_bt.so timeout 150 "$@" >"$W/$name.out" 2>&1
  local rc=$?
  grep -v "FutureWarning\|return cls.__new__\|filelock\|^$" "$W/$name.out" | tail -n 60 >>"$LOG"
  echo "==== $name rc=$rc" >>"$LOG"
  say "$name rc=$rc"
}
C=$W/c
probe cli env XDG_CACHE_HOME=$C TRITON_CACHE_DIR=$C/triton TORCHINDUCTOR_CACHE_DIR=$C/inductor BSMAMBA2_GLUE_AOT=1 \
  python3 -X faulthandler -m bsmamba2 -v separate "$W/song.wav" --fused --batch-size 8 -o "$W/out_cli"
PKG=$(ls $C/bsmamba2/glue/*.pt2 2>/dev/null | head -n 1)
if [ -z "$PKG" ]; then echo "no package built" >>"$LOG"; else
  { echo "$PKG"; cat "${PKG%.pt2}.json"; echo; python3 -m zipfile -l "$PKG"; } >"$O/pkg_listing.txt" 2>&1
  probe load_touch0 python3 -X faulthandler scripts/aot_probe.py load "$PKG" --touch --index 0
  probe load_bare0 python3 -X faulthandler scripts/aot_probe.py load "$PKG" --index 0
  probe load_touch_m1 python3 -X faulthandler scripts/aot_probe.py load "$PKG" --touch --index -1
  probe pyload python3 -X faulthandler scripts/aot_probe.py pyload "$PKG"
  probe rebuild python3 -X faulthandler scripts/aot_probe.py rebuild "${PKG%.pt2}.json" $W/c_rebuild
  R=$(ls $W/c_rebuild/bsmamba2/glue/*.pt2 2>/dev/null | head -n 1)
  [ -n "$R" ] && probe load_rebuilt python3 -X faulthandler scripts/aot_probe.py load "$R" --touch --index 0
fi
probe separator env TRITON_CACHE_DIR=$W/c_sep/triton TORCHINDUCTOR_CACHE_DIR=$W/c_sep/inductor \
  python3 -X faulthandler scripts/aot_probe.py separator $W/c_sep
probe pytest python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_glue_cache.py -k gpu
ls -la $C/bsmamba2/glue $W/c_sep/bsmamba2/glue >>"$LOG" 2>&1
say "done"
