#!/usr/bin/env bash
# The project's one prepared GPU check, for a lent CUDA machine with no network (the device
# tool's machine: its python3 has torch, transformers, peft, accelerate, but not our pydantic).
#
#   1. installs the carried wheels (.whl/, py3.12) into /tmp/site. The machine lacks what our
#      code and test conftests import beyond torch/transformers; fetch them once, here, with
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_17_x86_64 -d .whl pydantic==2.14.3 \
#          pydantic-core==2.50.4 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
#          typing-extensions==4.16.0 annotated-types==0.8.0 typing-inspection==0.4.5 \
#          fastapi==0.136.3 starlette==1.10.0 email-validator==2.4.0 \
#          pydantic-extra-types==2.11.1 python-multipart==0.0.34 sniffio==1.3.1
#      (.whl/ is ignored through .git/info/exclude; tests/serving/conftest.py needs fastapi)
#   2. prints nvidia-smi and the versions that matter
#   3. runs the gpu test tier: tests/learner/ml/test_gpu_training.py and
#      tests/serving/engines/test_transformers_engine_gpu.py
#   4. builds SmolLM2-135M with random weights from its carried config/tokenizer
#      (.gpu-model/smollm2-135m-config, ignored like .whl/: config.json, generation_config.json,
#      tokenizer.json, tokenizer_config.json and chat_template.jinja copied from the embedded
#      model's directory, `rlhf-model` prints it; no weights: too large to carry), so the
#      timings are the real model's, and runs python -m bench.bench_learner (reward model + 2 PPO
#      steps of 16 prompts x 64 new tokens) and python -m bench.bench_engines --device cuda on it.
#
# Everything goes to $OUT (logs + JSON). A failing step is recorded and the next one still runs;
# the exit status is the number of failed steps.
#
# Device call (carry .whl and .gpu-model):
#   set -o pipefail; PYTHONUNBUFFERED=1 scripts/gpu_check.sh 2>&1 | tee $OUT/run.log
# Dry run on a CPU machine (tiny model, small sizes; the gpu tests are skipped with their reason):
#   PY=.venv/bin/python GPU_CHECK_QUICK=1 GPU_CHECK_SKIP_WHEELS=1 OUT=/tmp/gpu-check \
#     scripts/gpu_check.sh
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh" gpu-check

step "environment"
{
    nvidia-smi || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import platform

import accelerate
import peft
import pydantic
import torch
import transformers

print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"cc {p.major}.{p.minor}")
print("transformers", transformers.__version__, "peft", peft.__version__)
print("accelerate", accelerate.__version__, "pydantic", pydantic.__version__)
EOF
} 2>&1 | tee "$OUT/env.txt"
record environment "${PIPESTATUS[0]}"

step "pytest -m gpu"
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rA \
    tests/learner/ml/test_gpu_training.py tests/serving/engines/test_transformers_engine_gpu.py \
    2>&1 | tee "$OUT/pytest.log"
record pytest "${PIPESTATUS[0]}"

step "model"
if [ "$QUICK" = 1 ]; then
    MODEL=$(mktemp -d)/tiny
    write_tiny_model "$MODEL"
    model_status=$?
    LEARNER_ARGS=(--pairs 8 --rm-batch 4 --ppo-batch 4 --new-tokens 8 --mini-batch 2
        --ppo-epochs 1 --ppo-steps 1)
    ENGINE_ARGS=(--max-tokens 8)
else
    MODEL=$PWD/.gpu-model/smollm2-135m-random
    rm -rf "$MODEL" && cp -r .gpu-model/smollm2-135m-config "$MODEL"
    "$PY" - "$MODEL" <<'EOF'
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

path = sys.argv[1]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
model.save_pretrained(path, safe_serialization=True)
n = sum(p.numel() for p in model.parameters())
print(f"random SmolLM2-135M architecture: {n / 1e6:.1f}M parameters saved to {path}")
EOF
    model_status=$?
    # H200 (Hopper SXM) dense fp32 peak by the datasheet: about 67 TFLOP/s.
    LEARNER_ARGS=(--pairs 64 --rm-batch 8 --ppo-batch 16 --new-tokens 64 --mini-batch 4
        --ppo-epochs 2 --ppo-steps 2 --peak-gflops 67000)
    ENGINE_ARGS=(--max-tokens 64 --repeats 2)
fi
record model "$model_status"


step "bench_learner ($DEVICE)"
timeout 150 "$PY" -m bench.bench_learner --model-dir "$MODEL" "${LEARNER_ARGS[@]}" \
    --json "$OUT/bench_learner.json" 2>&1 | tee "$OUT/bench_learner.log"
record bench_learner "${PIPESTATUS[0]}"

step "bench_engines ($DEVICE)"
timeout 120 "$PY" -m bench.bench_engines --model-dir "$MODEL" --device "$DEVICE" \
    "${ENGINE_ARGS[@]}" --json "$OUT/bench_engines.json" 2>&1 | tee "$OUT/bench_engines.log"
record bench_engines "${PIPESTATUS[0]}"

step "done: $failed failed step(s)"
exit "$failed"
