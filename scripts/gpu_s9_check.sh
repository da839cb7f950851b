#!/usr/bin/env bash
# Session 9's device call (about 7 minutes): the toolchain facts behind the AOTInductor glue's crash, the GPU
# tests of the fused Triton norms and of the glue packages, the packages at the CLI's shape in a bare process
# (private C++ runtime, child-process load check), and `bsmamba2 separate` rows: defaults (Triton norms on),
# Triton norms off, the compiled glue through AOTInductor packages.
#
#   bash scripts/gpu_s9_check.sh      # carry .whl (soundfile, soxr)
# Env: TESTS_CAP (s, default 100), CLI_BUDGET (s, default 230), CLI_ROWS (default below), MODELS=1 (also the
# models-alone section: BSMamba2, BS-RoFormer and htdemucs through the same chunking; carry demucs' wheels).
# Results under $OUT: toolchain.txt, gpu_tests.log, aot.log, cli/ (cli.json, cli.md), cli.log, status.txt.
set -u
TAG=s9_check
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
W=/tmp/bsm_s9; rm -rf $W; mkdir -p $W
{
  echo "g++: $(command -v g++) | $(g++ --version 2>&1 | head -n 1) | CXX=${CXX:-unset}"
  echo "gcc libdir: $(g++ -print-file-name=libstdc++.so) | static: $(g++ -print-file-name=libstdc++.a)"
  python3 - <<'PY'
import torch
maps = {l.split()[-1] for l in open("/proc/self/maps") if "libstdc++" in l or "libgcc_s" in l}
print("process runtime:", sorted(maps), "| torch cxx11 abi:", torch._C._GLIBCXX_USE_CXX11_ABI)
PY
} >"$O/toolchain.txt" 2>&1
say "toolchain: $(head -n 1 "$O/toolchain.txt")"
(
  gcc -shared -fPIC -O1 -o $W/segv_bt.so scripts/segv_bt.c
  echo '["bsmamba2.model.mixers.mamba2_glue.block_in", ["T", [496, 801, 128], [102528, 128, 1], "torch.bfloat16", "cuda:0"], ["T", [128], [1], "torch.float32", "cuda:0"], ["C", "1e-05"], ["T", [648, 128], [128, 1], "torch.bfloat16", "cuda:0"], ["T", [384, 1, 4], [4, 4, 1], "torch.float32", "cuda:0"], ["T", [384], [1], "torch.float32", "cuda:0"], ["T", [8], [1], "torch.float32", "cuda:0"], ["C", "(256, 64, 8)"], ["C", "False"]]' >$W/spec.json
  LD_PRELOAD=$W/segv_bt.so timeout 150 python3 -X faulthandler scripts/aot_probe.py rebuild $W/spec.json $W/c 2>&1 \
    | grep -v "FutureWarning\|return cls.__new__\|^$" | tail -n 40
  echo "rebuild rc=${PIPESTATUS[0]}"
  for p in $W/c/bsmamba2/glue/*.pt2; do
    [ -e "$p" ] || continue
    mkdir -p $W/x && (cd $W/x && python3 -m zipfile -e "$p" .)
    so=$(find $W/x -name "*.so" | head -n 1)
    echo "package $(basename "$p"): NEEDED $(readelf -d "$so" | grep NEEDED | sed 's/.*\[//; s/\]//' | tr '\n' ' ')"
    echo "  exported libstdc++ non-template symbols (codecvt/locale): $(nm -D --defined-only "$so" | grep -c 'codecvt\|_ZNSt6locale')"
  done
  ls $W/c/bsmamba2/glue 2>&1
) >"$O/aot.log" 2>&1 &
PA=$!
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 4"
# shellcheck disable=SC2086
taskset -c 4-15 timeout "${TESTS_CAP:-100}" python3 -m pytest -q -m gpu $XDIST -p no:cacheprovider -rfE \
  tests/test_norm_triton.py tests/test_glue_cache.py tests/test_conv_triton.py >"$O/gpu_tests.log" 2>&1
echo "gpu_tests rc=$?" >>"$O/status.txt"
say "gpu tests: $(tail -n 1 "$O/gpu_tests.log")"
wait $PA
say "aot: $(grep -h 'fallback calls\|rebuild rc' "$O/aot.log" | tr '\n' ' ')"
B=${CLI_BUDGET:-230}
taskset -c 4-15 timeout $((B + 60)) python3 benchmarks/bench_cli.py --songs 10 --seconds 240 --budget "$B" \
  --rows "${CLI_ROWS:-Triton norms off,(AOTInductor)}" $([ "${MODELS:-0}" = 1 ] || echo --no-models) \
  --out "$O/cli" >"$O/cli.log" 2>&1
echo "cli rc=$?" >>"$O/status.txt"
say "cli done"
cat "$O/cli/cli.md" 2>/dev/null | head -n 40
