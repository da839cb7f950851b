#!/usr/bin/env bash
# One short device call that finds where the time goes (issues 12 and 15), before tuning:
#   - the GPU: `bsmamba2 separate` of one 4-minute song, cold then warm with --timings, the warm run again under
#     cProfile (top functions) and -X importtime, and benchmarks/profile_paths.py gpu (operator tables);
#   - the CPU, pinned to cores 0-1 while the GPU side runs on 4-15: profile_paths.py cpu (bundled model, fp32
#     and bf16, 2 threads) and profile_paths.py stream (10 ms blocks, 1 and 2 threads).
#   bash scripts/gpu_profile.sh      # from the repository root; carry .whl (soundfile, soxr)
set -u
TAG=profile
# shellcheck source=scripts/device_env.sh
source "$(dirname "$0")/device_env.sh"
say "$(nvidia-smi -L 2>&1 | head -1); $(nproc) cores; $(lscpu | grep 'Model name')"
(
  for d in fp32 bf16; do
    taskset -c 0,1 timeout 120 python3 benchmarks/profile_paths.py cpu --dtype $d --threads 2 --out "$O/cpu" \
      >"$O/cpu_$d.log" 2>&1
  done
  for t in 1 2; do
    taskset -c 0,1 timeout 60 python3 benchmarks/profile_paths.py stream --threads $t --out "$O/cpu" \
      >"$O/stream_t$t.log" 2>&1
  done
  echo "cpu side done" >>"$O/status.txt"
) &
python3 - <<'PY'
import numpy as np, soundfile as sf
rng = np.random.default_rng(0)
sf.write("/tmp/song.wav", (0.1 * rng.standard_normal((240 * 44100, 2))).astype(np.float32), 44100, subtype="PCM_16")
PY
G="taskset -c 4-15"
S="-m bsmamba2 separate /tmp/song.wav -o /tmp/sep"
( time $G python3 $S ) >"$O/song_cold.log" 2>&1; rm -rf /tmp/sep
say "cold: $(grep real "$O/song_cold.log")"
( time $G python3 $S --timings "$O/timings_warm.json" ) >"$O/song_warm.log" 2>&1; rm -rf /tmp/sep
say "warm: $(grep real "$O/song_warm.log")"
$G python3 -X importtime $S 2>"$O/importtime.log" >/dev/null; rm -rf /tmp/sep
sort -t'|' -k2 -n -r "$O/importtime.log" | head -40 >"$O/importtime_top.txt"
$G python3 -m cProfile -o /tmp/song.prof $S >/dev/null 2>&1; rm -rf /tmp/sep
python3 -c "import pstats; p=pstats.Stats('/tmp/song.prof'); p.sort_stats('cumulative').print_stats(60)" \
  >"$O/cprofile_cum.txt" 2>&1
python3 -c "import pstats; p=pstats.Stats('/tmp/song.prof'); p.sort_stats('tottime').print_stats(40)" \
  >"$O/cprofile_tot.txt" 2>&1
say "cprofile done"
$G timeout 120 python3 benchmarks/profile_paths.py gpu --seconds 240 --out "$O/gpu" >"$O/gpu_prof.log" 2>&1
$G timeout 120 python3 benchmarks/profile_paths.py gpu --seconds 240 --batch 16 --out "$O/gpu16" >"$O/gpu_prof16.log" 2>&1
say "gpu profile done"
wait
say "all done"
