# Shared start of the prepared GPU checks (scripts/gpu_check.sh, scripts/gpu_scale_check.sh):
# sourced, not run. Sets OUT (default var/$1), PY, QUICK, the offline environment and PYTHONPATH;
# defines `step` and `record` (failed steps are counted in $failed); installs the carried wheels
# (.whl/, py3.12) into /tmp/site unless GPU_CHECK_SKIP_WHEELS=1; then sets DEVICE (cuda when
# torch sees one, else cpu) and defines `write_tiny_model DIR`.
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

DEVICE=cpu
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && DEVICE=cuda
write_tiny_model() { # write_tiny_model DIR: the tests' tiny random model (quick dry runs)
    "$PY" -c "import sys; from pathlib import Path; from devtools.tiny_model import \
write_tiny_model_dir as w; w(Path(sys.argv[1]))" "$1"
}
