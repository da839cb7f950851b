# Sourced by the device drivers (gpu_bench_all.sh, gpu_profile.sh): from the repository root, make $O (= $OUT,
# else ./bench_out), install the carried wheels (.whl/) into /tmp/bsm_site, put it and the tree on PYTHONPATH,
# and define `say TEXT` (a line stamped with the seconds since sourcing, tagged with $TAG).
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
O=${OUT:-bench_out}
mkdir -p "$O"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bsm_site .whl/*.whl \
    >"$O/pip.log" 2>&1
  export PYTHONPATH="/tmp/bsm_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { echo "[${TAG:-device} +$(($(date +%s) - T0))s] $*"; }
