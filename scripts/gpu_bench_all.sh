#!/usr/bin/env bash
# One device call (< 10 minutes) for the speed issues' tables: the GPU tests, then `bsmamba2 separate` as users
# run it (benchmarks/bench_cli.py) and streaming on the GPU, while the CPU tables run pinned to their own cores
# of the same machine: benchmarks/bench_cpu.py on 2 cores (cores 0-1, 2 threads) and benchmarks/bench_stream.py
# on cores 2-3 (1 thread, then 2). The GPU side is pinned to cores 4-15, so the CPU rows see otherwise idle
# cores (they share the memory bus with the GPU side; that is stated with the numbers).
#
#   bash scripts/gpu_bench_all.sh        # from the repository root; carry .whl (soundfile, soxr, demucs, julius)
#
# Results under $OUT: gpu_tests.log, cli/, stream_gpu/, cpu/, stream_cpu_t1/, stream_cpu_t2/, each part's log,
# and all of it in bench_all.tar.gz (a device call returns at most 8 files).
set -u
TAG=bench_all
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
say "$(nvidia-smi -L 2>&1 | head -1); $(nproc) cores; $(python3 -c 'import torch; print("torch", torch.__version__)')"

# CPU side, in the background on its own cores
(taskset -c 0,1 timeout 420 python3 benchmarks/bench_cpu.py --quick --threads 2 --out "$O/cpu" >"$O/cpu.log" 2>&1
 echo "cpu rc=$?" >>"$O/status.txt") &
(for t in 1 2; do
   taskset -c 2,3 timeout 150 python3 benchmarks/bench_stream.py --threads $t --seconds 10 --long 60 \
     --out "$O/stream_cpu_t$t" >"$O/stream_cpu_t$t.log" 2>&1
   echo "stream_cpu threads=$t rc=$?" >>"$O/status.txt"
 done) &

# GPU side, one thing at a time
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 6"
# SKIP_GPU_TESTS=1 when the same session's earlier call ran them (benchmarks/gpu_s4.sh with GPU_TESTS=tests)
if [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
  taskset -c 4-15 timeout 160 python3 -m pytest -v -m gpu $XDIST -p no:cacheprovider -rfE tests/ >"$O/gpu_tests.log" 2>&1
  echo "gpu_tests rc=$?" >>"$O/status.txt"
  say "gpu tests: $(grep -cE ' PASSED' "$O/gpu_tests.log") passed, $(grep -cE ' FAILED| ERROR' "$O/gpu_tests.log") failed"
fi
CLI_BUDGET=${CLI_BUDGET:-220}
taskset -c 4-15 timeout $((CLI_BUDGET + 50)) python3 benchmarks/bench_cli.py --songs 10 --seconds 240 --budget "$CLI_BUDGET" --out "$O/cli" \
  >"$O/cli.log" 2>&1
echo "cli rc=$?" >>"$O/status.txt"
say "cli done"
taskset -c 4-15 timeout 40 python3 benchmarks/bench_stream.py --device cuda --seconds 10 --long 0 \
  --out "$O/stream_gpu" >"$O/stream_gpu.log" 2>&1
echo "stream_gpu rc=$?" >>"$O/status.txt"
wait
say "all done"
cat "$O/status.txt"
grep -E "FAILED|ERROR" "$O/gpu_tests.log" 2>/dev/null | head -20
tar czf "$O/bench_all.tar.gz" -C "$O" --exclude=bench_all.tar.gz . 2>/dev/null
