#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default: dev broker, serving, learner
# and simulated users on SmolLM2-135M (CPU), with a live dashboard. Ctrl-C stops it cleanly.
# Each new version first serves as a canary that the users' votes promote or roll back
# (--no-canary: it serves everyone at once). Extra arguments go to rlhf-demo (see
# .venv/bin/rlhf-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/rlhf-demo "$@"
