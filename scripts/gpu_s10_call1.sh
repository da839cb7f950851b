#!/usr/bin/env bash
# Session 10's first device call: where one song's wall time goes in a fresh `bsmamba2 separate` process
# (scripts/profile_one_song.py, ~1 minute, before anything else loads the machine), then the default model's
# training (scripts/gpu_default_v2.sh) in the rest of a 9.3-minute budget. Carry .whl and .carry/corpus_v2.tar
# (with scripts/carry_lean.sh aside); RUNS and V2 as gpu_default_v2.sh's --runs / --v2.
set -u
cd "$(dirname "$0")/.." || exit 1
O=${OUT:-out}; mkdir -p "$O/prof"
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$O/pip.log" 2>&1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$O/prof/gpu.txt" 2>&1
timeout 150 python3 scripts/profile_one_song.py run --seconds 240 --reps 3 --out "$O/prof" > "$O/prof/run.log" 2>&1
echo "profile rc=$? after $(( $(date +%s) - T0 )) s"
mkdir -p /tmp/cv2 && tar xf .carry/corpus_v2.tar -C /tmp/cv2
LEFT=$(python3 -c "print(f'{9.3 - ($(date +%s) - $T0) / 60:.2f}')")
echo "training budget $LEFT min"
bash scripts/gpu_default_v2.sh --budget "$LEFT" --runs "$RUNS" --v2 "$V2" --assets /tmp/cv2/corpus_v2 ${FINAL:+--final-eval}
