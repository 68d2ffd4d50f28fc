# Shared start of the prepared GPU checks (scripts/gpu_check.sh, scripts/gpu_scale_check.sh):
# sourced, not run. Sets OUT (default var/$1), PY, QUICK, the offline environment and PYTHONPATH,
# defines `step` and `record` (failed steps are counted in $failed), and installs the carried
# wheels (.whl/, py3.12) into /tmp/site unless GPU_CHECK_SKIP_WHEELS=1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/var/$1}
PY=${PY:-python3}
QUICK=${GPU_CHECK_QUICK:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD"
failed=0
step() { echo; echo "== $* ($(date +%T))"; }
record() { # record NAME STATUS
    echo "-- $1: exit $2"
    [ "$2" -eq 0 ] || failed=$((failed + 1))
}

step "wheels"
if compgen -G ".whl/*.whl" >/dev/null && [ "${GPU_CHECK_SKIP_WHEELS:-0}" != 1 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 100; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    echo "no wheels installed (none carried, or GPU_CHECK_SKIP_WHEELS=1)"
fi
