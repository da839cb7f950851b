#!/usr/bin/env bash
# Device-side training driver: one call = (make the corpus if missing) + (train one or several configs in
# parallel on the one GPU, each with a wall-clock budget) + (pack what is needed to resume, and the curves,
# under $OUT). Run it from the repository root, inside a < 10 minute device call.
#
#   scripts/gpu_train.sh                                   # configs/default_small.yaml, 9-minute call
#   scripts/gpu_train.sh --configs study_bsmamba2,study_bsroformer --budget 9.3
#   scripts/gpu_train.sh --configs default_small --carry .carry --extra "optim.lr=3e-4"
#   scripts/gpu_train.sh --synth-only                      # just build the corpus (timing check)
#   scripts/gpu_train.sh --check                           # imports, GPU, cores; trains nothing
#
# Options
#   --configs a,b     config names under configs/ (or paths to .yaml), trained in parallel   [default_small]
#                     NAME@DIR trains NAME on the corpus at DIR instead of --data
#                     NAME[@DIR]+key=value[+key=value] adds overrides for that run only
#   --prepared        the corpora exist already (made by the caller): generate nothing
#   --budget MIN      wall-clock minutes for the WHOLE call; training gets what is left after the corpus,
#                     minus --reserve                                                         [9]
#   --reserve MIN     minutes kept for the final checkpoint, export and packing               [1.0]
#   --run-root DIR    where run folders live on the device (kept if the machine stays warm)  [/tmp/bsm_runs]
#   --data DIR        corpus root; generated there if missing                                 [/tmp/bsm_corpus]
#   --carry DIR       folder holding the files a previous call returned (NAME.resume.safetensors,
#                     NAME.ema.safetensors, logs.tar.gz); used only when RUN_ROOT has no checkpoint  [.carry]
#   --out DIR         where returned files go                                                 [$OUT]
#   --extra "k=v .."  overrides passed to every training run (e.g. "max_steps=4000 batch_size=6")
#   --synth-train N / --synth-valid N / --synth-test N / --synth-seconds S / --synth-seed S
#                     corpus size                                          [64 / 8 / 16 x 60 s, seed 0]
#
# Corpus: `bsmamba2 synth` with preset "mixed" (every vocal phrase draws its own sparsity regime: sparse,
# medium or dense) on all cores; idempotent: a corpus whose ROOT/.complete matches the requested parameters
# is reused, a partial or different one is rebuilt.
#
# Resuming, and its trade-off (see scripts/runpack.py). A full checkpoint of a 6.8M-parameter model is
# ~110 MB (fp32 weights, fp32 EMA, two fp32 Adam moments) but a call returns at most 8 files of 16 MiB
# (64 MiB in all) and carries at most 64 MiB in. So, per run, in order of preference:
#   1. RUN_ROOT/NAME has a checkpoint (the machine stayed warm): exact resume (optimizer included).
#   2. CARRY/NAME.resume.safetensors exists (a fresh machine): the run is rebuilt from bf16 weights, bf16
#      EMA, a factored (rank-1) Adam second moment with the first moment reset, and the step / data
#      position; then resumed. Costs: one bf16 rounding of weights and EMA per trip, and ~10-20 steps of
#      smaller-than-usual updates while Adam's first moment refills.
#   3. Otherwise training starts from scratch.
# Returned per run: NAME.resume.safetensors (~13 MiB) and NAME.ema.safetensors (~13 MiB, an ordinary model
# file: evaluate / ship this one). Plus logs.tar.gz (per run: log.txt, curves.csv/json, config.yaml, the
# last checkpoint's meta.json, stdout tail) and summary.txt. Two 6.8M-parameter runs = 6 files, ~53 MiB.
# To continue on a fresh machine: copy the returned files into .carry/ (git-ignored) and carry ".carry".
set -uo pipefail

CONFIGS=default_small
BUDGET=9
RESERVE=1.0
RUN_ROOT=/tmp/bsm_runs
DATA=/tmp/bsm_corpus
CARRY=.carry
OUTDIR=${OUT:-out}
EXTRA=""
SYNTH_ONLY=0
CHECK=0
PREPARED=0
N_TRAIN=64
N_VALID=8
N_TEST=16
SECONDS_PER_TRACK=60
SYNTH_SEED=0
SYNTH_PRESET=mixed

while [ $# -gt 0 ]; do
  case "$1" in
    --configs) CONFIGS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --reserve) RESERVE=$2; shift 2 ;;
    --run-root) RUN_ROOT=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --carry) CARRY=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --extra) EXTRA=$2; shift 2 ;;
    --synth-only) SYNTH_ONLY=1; shift ;;
    --prepared) PREPARED=1; shift ;;
    --check) CHECK=1; shift ;;
    --synth-train) N_TRAIN=$2; shift 2 ;;
    --synth-valid) N_VALID=$2; shift 2 ;;
    --synth-test) N_TEST=$2; shift 2 ;;
    --synth-seconds) SECONDS_PER_TRACK=$2; shift 2 ;;
    --synth-seed) SYNTH_SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "gpu_train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
elapsed_min() { python3 -c "import time; print(f'{(time.time() - $T0) / 60:.2f}')"; }
say() { echo "[gpu_train $(elapsed_min) min] $*"; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
NPROC=$(nproc 2>/dev/null || echo 4)
mkdir -p "$OUTDIR" "$RUN_ROOT"

# ---- 0. environment ---------------------------------------------------------------------------------------
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels (device README recipe)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if ! $PY - <<'EOF'
import importlib, sys
missing = []
for m in ("torch", "numpy", "einops", "soundfile", "soxr", "safetensors", "yaml", "tqdm", "torch.utils.tensorboard"):
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{m} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
try:
    import bsmamba2.data.synth, bsmamba2.train.loop  # noqa: F401
except Exception as e:  # noqa: BLE001
    missing.append(f"bsmamba2 ({e}); is bsmamba2/data/ in the tree? .gitignore's 'data/' hides it: carry it")
import torch
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
if missing:
    print("missing: " + "; ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
then
  echo "gpu_train.sh: the Python environment lacks packages (above); carry them as wheels in .whl/" >&2
  exit 3
fi
say "repo $REPO, $NPROC cores, run root $RUN_ROOT, data $DATA, out $OUTDIR"
[ "$CHECK" = 1 ] && { nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null; exit 0; }

# ---- 1. corpus (idempotent) ---------------------------------------------------------------------------------
SPEC="train=$N_TRAIN valid=$N_VALID test=$N_TEST seconds=$SECONDS_PER_TRACK preset=$SYNTH_PRESET seed=$SYNTH_SEED"
if [ "$PREPARED" = 1 ]; then
  SPEC="prepared by the caller"
  say "corpora prepared by the caller"
elif [ -f "$DATA/.complete" ] && [ "$(cat "$DATA/.complete")" = "$SPEC" ]; then
  say "corpus $DATA present ($SPEC)"
else
  rm -rf "$DATA"
  say "generating corpus $DATA ($SPEC) on $NPROC processes"
  if ! $PY -m bsmamba2 synth "$DATA" --train "$N_TRAIN" --valid "$N_VALID" --test "$N_TEST" \
      --seconds "$SECONDS_PER_TRACK" --preset "$SYNTH_PRESET" --seed "$SYNTH_SEED" --workers "$NPROC" --quiet; then
    echo "gpu_train.sh: corpus generation failed" >&2
    exit 4
  fi
  echo "$SPEC" > "$DATA/.complete"
  say "corpus done ($(du -sh "$DATA" | cut -f1))"
fi
[ "$SYNTH_ONLY" = 1 ] && exit 0

# ---- 2. train in parallel -----------------------------------------------------------------------------------
IFS=',' read -r -a NAMES <<< "$CONFIGS"
TRAIN_MIN=$(python3 -c "print(f'{max(1.0, $BUDGET - $(elapsed_min) - $RESERVE):.2f}')")
say "training ${NAMES[*]} for $TRAIN_MIN min each, in parallel"
# restore carried logs (one tarball for all runs) so log.txt keeps the whole history
if [ -f "$CARRY/logs.tar.gz" ]; then mkdir -p /tmp/bsm_carried_logs && tar xzf "$CARRY/logs.tar.gz" -C /tmp/bsm_carried_logs; fi
declare -A PIDS
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NGPU" -ge 1 ] || NGPU=1
IDX=0  # with several GPUs, run i gets GPU i mod NGPU
# shellcheck disable=SC2086  # EXTRA is a list of key=value words
for spec in "${NAMES[@]}"; do
  data=$DATA
  over=()  # NAME[@ROOT][+key=value[+key=value...]]: overrides for this run only
  if [[ "$spec" == *+* ]]; then IFS='+' read -r -a over <<< "${spec#*+}"; spec=${spec%%+*}; fi
  if [[ "$spec" == *@* ]]; then data=${spec#*@}; spec=${spec%%@*}; fi
  cfg=$spec; [ -f "$cfg" ] || cfg=configs/$spec.yaml
  name=$(basename "$cfg" .yaml)
  [ -f "$cfg" ] || { echo "gpu_train.sh: no config $cfg" >&2; exit 2; }
  run="$RUN_ROOT/$name"
  resume=()
  if ! ls -d "$run"/checkpoints/step_* >/dev/null 2>&1 && [ -f "$CARRY/$name.resume.safetensors" ]; then
    $PY scripts/runpack.py restore "$CARRY" "$name" "$run" || { echo "gpu_train.sh: restore of $name failed" >&2; exit 5; }
    if [ -f "/tmp/bsm_carried_logs/$name/log.txt" ] && [ ! -f "$run/log.txt" ]; then
      cp "/tmp/bsm_carried_logs/$name/log.txt" "$run/log.txt"
    fi
  fi
  if ls -d "$run"/checkpoints/step_* >/dev/null 2>&1; then resume=(--resume "$run"); fi
  mkdir -p "$run"
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$((IDX % NGPU)) \
    $PY -m bsmamba2 train "$cfg" "data.root=$data" "run_dir=$run" "max_minutes=$TRAIN_MIN" $EXTRA "${over[@]}" "${resume[@]}" \
    > "$run/stdout.txt" 2>&1 &
  IDX=$((IDX + 1))
  PIDS[$name]=$!
  say "started $name (pid ${PIDS[$name]}${resume:+, resuming})"
done
FAILED=()
for name in "${!PIDS[@]}"; do
  if wait "${PIDS[$name]}"; then say "$name finished"; else FAILED+=("$name"); say "$name FAILED (tail of stdout):"; tail -n 15 "$RUN_ROOT/$name/stdout.txt"; fi
done

# ---- 3. pack for the trip back ---------------------------------------------------------------------------
STAGE=$(mktemp -d)
SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"
for name in "${!PIDS[@]}"; do
  run="$RUN_ROOT/$name"
  mkdir -p "$STAGE/$name"
  cp "$run/log.txt" "$run/config.yaml" "$STAGE/$name/" 2>/dev/null
  tail -n 200 "$run/stdout.txt" > "$STAGE/$name/stdout_tail.txt" 2>/dev/null
  [ -f "$run/checkpoints/last/meta.json" ] && cp "$run/checkpoints/last/meta.json" "$STAGE/$name/last_meta.json"
  $PY scripts/runpack.py curves "$run/log.txt" "$STAGE/$name/curves.csv" --name "$name" | tee -a "$SUMMARY"
  if ls -d "$run"/checkpoints/step_* >/dev/null 2>&1; then
    $PY scripts/runpack.py export "$run" "$OUTDIR" "$name" || echo "$name: export failed" | tee -a "$SUMMARY"
  fi
done
tar czf "$OUTDIR/logs.tar.gz" -C "$STAGE" .
rm -rf "$STAGE"
{
  echo "call: configs=$CONFIGS budget=${BUDGET}min train=${TRAIN_MIN}min extra='$EXTRA' corpus='$SPEC'"
  [ ${#FAILED[@]} -gt 0 ] && echo "FAILED: ${FAILED[*]}"
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
  ls -l "$OUTDIR" | awk 'NR>1 {printf "  %-40s %6.1f MiB\n", $9, $5/1048576}'
} >> "$SUMMARY"
say "done"
cat "$SUMMARY"
[ ${#FAILED[@]} -eq 0 ]
