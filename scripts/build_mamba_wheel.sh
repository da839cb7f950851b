#!/usr/bin/env bash
# Build mamba-ssm's wheel without its CUDA extension: a pure-Python wheel whose Triton kernels
# (mamba_ssm/ops/triton/ssd_*.py) are the baseline of benchmarks/bench_ssd.py. Written to .whl/ (git-ignored),
# which benchmarks/gpu_suite.sh installs on a GPU machine that has no network.
#
#   bash scripts/build_mamba_wheel.sh [VERSION]      # default 2.2.2 (the version the official BSMamba2 pins)
#
# Needs torch, setuptools, wheel and packaging in the current Python (the build runs without isolation, and
# mamba-ssm's setup.py imports torch). 2.3.x is an alternative if 2.2.2's sdist stops building.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-2.2.2}"
PY="${PY:-python3}"
"$PY" -c "import torch, setuptools, wheel, packaging" 2>/dev/null || {
  echo "needs torch, setuptools, wheel and packaging in $PY (e.g. pip install wheel)" >&2
  exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  "$PY" -m pip wheel --no-build-isolation --no-deps "mamba-ssm==$VERSION" -w "$tmp"
whl=$(ls "$tmp"/mamba_ssm-*.whl)
if unzip -l "$whl" | grep -q '\.so$'; then
  echo "unexpected: $whl contains a compiled extension" >&2
  exit 1
fi
unzip -l "$whl" | grep -q 'mamba_ssm/ops/triton/ssd_combined.py' || {
  echo "unexpected: $whl lacks mamba_ssm/ops/triton/ssd_combined.py" >&2
  exit 1
}
mkdir -p .whl
rm -f .whl/mamba_ssm-*.whl
cp "$whl" .whl/
echo "built .whl/$(basename "$whl") ($(du -h "$whl" | cut -f1)); pure Python, the Triton SSD kernels included"
