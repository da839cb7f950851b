#!/usr/bin/env bash
# Device driver for the second bundled model (issue 14) and the compact causal model (issue 15), in one call:
#   1. corpus v1 (`bsmamba2 synth`, oscillator/formant engine, seed 0) and corpus v2 (`--engine samples` from
#      the carry folder that scripts/build_corpus_v2.py writes) rendered side by side on all cores;
#   2. a mixed root (symlinks: train/ and valid/ of both, track names prefixed v1_ / v2_);
#   3. scripts/gpu_train.sh trains default_v2 (warm start from the bundled model) on the mix and causal_small
#      on v1 alone, in parallel on the one GPU, and packs both for the trip back (see that script);
#   4. evaluations while they train (--eval): the first bundled model on the v1 and v2 test splits, and on v1
#      at chunk overlaps 0 / 0.25 / 0.5 (the choice of `separate`'s default), packed as $OUT/eval.tar.gz.
# Run from the repository root inside one < 10 minute device call; carry .whl (soundfile, soxr, tinysoundfont)
# and .carry (corpus_v2/ and, to resume on a fresh machine, what an earlier call returned).
#
#   5. with --final-eval, the returned EMA of default_v2 on the v1 and v2 test splits (after training), beside
#      the bundled model on the same songs, packed as $OUT/final_eval.tar.gz.
#
#   bash scripts/gpu_default_v2.sh [--budget 9] [--eval] [--final-eval] [--v1 "32 4 16 60"] [--v2 "48 4 16 45"]
#        [--runs "default_v2@MIX,causal_small@V1"]
set -uo pipefail
BUDGET=9
EVAL=0
V1_SPEC="32 4 16 60"   # train valid test seconds
V2_SPEC="48 4 16 45"
ASSETS=.carry/corpus_v2
RUNS="default_v2@MIX,causal_small@V1"
FINAL_EVAL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET=$2; shift 2 ;;
    --eval) EVAL=1; shift ;;
    --final-eval) FINAL_EVAL=1; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --v1) V1_SPEC=$2; shift 2 ;;
    --v2) V2_SPEC=$2; shift 2 ;;
    --assets) ASSETS=$2; shift 2 ;;
    *) echo "gpu_default_v2.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 1
OUTDIR=${OUT:-out}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >/dev/null 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
N=$(nproc)
V1=/tmp/bsm_v1 V2=/tmp/bsm_v2 MIX=/tmp/bsm_mix
corpus() {  # corpus DIR SPEC SEED WORKERS [engine args...]
  local dir=$1 spec=$2 seed=$3 workers=$4; shift 4
  read -r tr va te sec <<< "$spec"
  [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$spec $seed $*" ] && return 0
  rm -rf "$dir"
  python3 -m bsmamba2 synth "$dir" --train "$tr" --valid "$va" --test "$te" --seconds "$sec" --preset mixed \
    --seed "$seed" --workers "$workers" -q "$@" && echo "$spec $seed $*" > "$dir/.complete"
}
# v1 (oscillators) renders several times faster than v2 (SoundFonts, sung phrases): v2 gets most of the cores
W1=${V1_WORKERS:-$(( N / 4 > 1 ? N / 4 : 1 ))}
W2=$(( N - W1 > 1 ? N - W1 : 1 ))
corpus "$V1" "$V1_SPEC" 0 "$W1" & P1=$!
corpus "$V2" "$V2_SPEC" 1 "$W2" --engine samples --assets "$ASSETS" & P2=$!
wait $P1 || { echo "corpus v1 failed" >&2; exit 4; }
wait $P2 || { echo "corpus v2 failed" >&2; exit 4; }
echo "[gpu_default_v2] corpora ready after $(( $(date +%s) - T0 )) s: v1 $(du -sh $V1 | cut -f1), v2 $(du -sh $V2 | cut -f1)"
rm -rf "$MIX"
for subset in train valid; do
  mkdir -p "$MIX/$subset"
  for v in v1 v2; do
    src=$V1; [ $v = v2 ] && src=$V2
    for t in "$src/$subset"/*/; do ln -s "${t%/}" "$MIX/$subset/${v}_$(basename "$t")"; done
  done
done

if [ "$EVAL" = 1 ]; then
  (
    ev=/tmp/bsm_eval; rm -rf $ev; mkdir -p $ev
    m=bsmamba2/assets/default.safetensors
    python3 -m bsmamba2 -q evaluate --model $m --data $V2 --subset test --out $ev/bundled_v2_ov0
    for ov in 0 0.25 0.5; do
      python3 -m bsmamba2 -q evaluate --model $m --data $V1 --subset test --overlap $ov --out $ev/bundled_v1_ov$ov
    done
    tar czf "$OUTDIR/eval.tar.gz" -C $ev --exclude='*.wav' .
  ) > "$OUTDIR/eval.log" 2>&1 &
  PE=$!
fi
ELAPSED=$(python3 -c "print(($(date +%s) - $T0) / 60)")
RESERVE=1.2; [ "$FINAL_EVAL" = 1 ] && RESERVE=2.2
RUNS=${RUNS//@MIX/@$MIX}; RUNS=${RUNS//@V1/@$V1}; RUNS=${RUNS//@V2/@$V2}
bash scripts/gpu_train.sh --prepared --configs "$RUNS" \
  --budget "$(python3 -c "print(f'{$BUDGET - $ELAPSED:.2f}')")" --reserve "$RESERVE"
RC=$?
if [ "$FINAL_EVAL" = 1 ] && [ -f "$OUTDIR/default_v2.ema.safetensors" ]; then
  ev=/tmp/bsm_final; rm -rf $ev; mkdir -p $ev
  for m in new:"$OUTDIR/default_v2.ema.safetensors" bundled:bsmamba2/assets/default.safetensors; do
    tag=${m%%:*}; file=${m#*:}
    python3 -m bsmamba2 -q evaluate --model "$file" --data $V2 --subset test --out $ev/${tag}_v2 &
    python3 -m bsmamba2 -q evaluate --model "$file" --data $V1 --subset test --out $ev/${tag}_v1 &
  done
  wait
  tar czf "$OUTDIR/final_eval.tar.gz" -C $ev --exclude='*.wav' .
  for f in $ev/*/summary.md; do echo "== $f"; head -n 12 "$f"; done
fi
[ "$EVAL" = 1 ] && { wait $PE; tail -n 3 "$OUTDIR/eval.log"; }
exit $RC
