#!/usr/bin/env bash
# Make room in a device call's 64 MiB carry for training from a fresh machine: the tree (~33 MB) plus
# .carry/corpus_v2 (~48 MB) does not fit. `aside` moves the tracked files that training does not read (the
# causal model, the regression vectors, the demo song, the study figure) and the benchmark-only wheels out of
# the working tree into $ASIDE; `back` restores them. Run `back` before committing or testing.
#
#   bash scripts/carry_lean.sh aside   # then: run scripts/gpu_default_v2.sh carrying .whl and .carry/corpus_v2
#   bash scripts/carry_lean.sh back
set -euo pipefail
cd "$(dirname "$0")/.."
ASIDE=${ASIDE:-/tmp/bsm_carry_aside}
FILES=(bsmamba2/assets/causal.safetensors bsmamba2/assets/example_v2.flac tests/regression/vectors.npz
       docs/figures/study_fig2.png)
case "${1:-}" in
  aside)
    mkdir -p "$ASIDE/.whl"
    for f in "${FILES[@]}"; do mkdir -p "$ASIDE/$(dirname "$f")"; mv "$f" "$ASIDE/$f"; done
    for w in .whl/demucs-* .whl/julius-* .whl/mamba_ssm-*; do [ -e "$w" ] && mv "$w" "$ASIDE/.whl/"; done
    echo "moved aside to $ASIDE; run '$0 back' afterwards" ;;
  back)
    for f in "${FILES[@]}"; do [ -e "$ASIDE/$f" ] && mv "$ASIDE/$f" "$f"; done
    for w in "$ASIDE"/.whl/*.whl; do [ -e "$w" ] && mv "$w" .whl/; done
    git status --short -- "${FILES[@]}" ;;
  *) echo "usage: $0 aside|back" >&2; exit 2 ;;
esac
