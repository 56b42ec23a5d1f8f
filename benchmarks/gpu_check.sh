#!/usr/bin/env bash
# One prepared check for a GPU machine (one H200, no network, at most 8 minutes), run from the repository
# root with the wheels of benchmarks/gpu_wheels.sh carried in .whl/:
#   device run (carry .whl):  bash benchmarks/gpu_check.sh
# It measures (results in $OUT/gpu_check.json and the log):
#   1. the tiny backend on CUDA: one `standard` GRPO evaluation, its training and scoring seconds;
#   2. the TRL backend on a randomly initialised Llama of about 0.5B parameters: steps per second and sampled
#      tokens per second of GRPOTrainer with the grpo built-in, vLLM in colocate mode when it is installed;
#   3. the verl backend: verl.trainer.main_ppo on a small random Llama, vLLM rollouts, 3 steps, a candidate
#      with its own shaping, advantages and loss loaded through its plugin (needs vLLM in the image: verl
#      has no other rollout engine that fits here), the final checkpoint scored; its curves and metrics.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/poise-gpu-check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD" || exit 1
export POISE_CACHE=/tmp/poise-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 460 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/log"
