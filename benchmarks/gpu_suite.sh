#!/usr/bin/env bash
# The GPU measurements of the package in one command (random weights of the real shapes, bf16; about 8 minutes on one
# H100 / H200; prints markdown tables, asserts nothing):
#
#   bash benchmarks/gpu_suite.sh              # on a GPU
#   bash benchmarks/gpu_suite.sh --cpu-small  # the same script on a CPU with small presets (or FAC_SUITE=cpu-small)
#
# 1. generate, eager vs compiled (`cache_implementation="static"`): ms per 5 Hz step, RTF, first code, peak memory
#    (benchmarks/bench_generate.py, 8B shapes);
# 2. the token2wav decoder, compiled, bf16 DiT: offline RTF and bounded-stream step latency (bench_token2wav.py);
# 3. the reply engine at concurrency 1 / 8 / 32: first audio p50 / p90 and real-time streams per GPU
#    (bench_server.py --concurrency, 8B shapes with a full-size random decoder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

mode="${FAC_SUITE:-gpu}"
if [[ "${1:-}" == "--cpu-small" ]]; then
  mode="cpu-small"
fi
limit="${FAC_SUITE_STEP_SECONDS:-300}"  # each part gets at most this long

run() {
  echo
  echo "## $1"
  shift
  local started=$SECONDS
  timeout "$limit" python3 "$@" 2>&1 | grep -v -E "Warning|warn\(|it/s\]|step/s\]|torchao|_pytree" || echo "(failed or timed out after $((SECONDS - started)) s)"
  echo "($((SECONDS - started)) s)"
}

if [[ "$mode" == "cpu-small" ]]; then
  echo "# GPU suite, CPU small mode (tiny / small presets): proves the script runs; the numbers are not GPU numbers"
  run "generate: eager vs compiled (tiny, float32, CPU)" benchmarks/bench_generate.py \
    --preset tiny --device cpu --steps 8 --repeats 1 --mode audio --no-single-resolution
  run "token2wav (small DiT, CPU, eager fp32)" benchmarks/bench_token2wav.py \
    --preset small --device cpu --repeats 1 --offline-codes 25 --skip-stream --skip-compile --skip-bf16
  run "reply engine at concurrency 1 / 2 / 4 (tiny, CPU)" benchmarks/bench_server.py \
    --preset tiny --device cpu --concurrency 1,2,4 --per-client 1 --tokens 10
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  echo "# GPU suite: random weights of the real shapes, bf16"
  run "generate: eager vs compiled (8B shapes, bf16)" benchmarks/bench_generate.py \
    --preset 8b --device cuda --dtype bfloat16 --steps 50 --repeats 2 --mode audio --no-single-resolution
  run "token2wav (full size, compiled, bf16 DiT)" benchmarks/bench_token2wav.py \
    --preset full --device cuda --repeats 2 --stream-seconds 10
  run "reply engine at concurrency 1 / 8 / 32 (8B shapes, bf16)" benchmarks/bench_server.py \
    --preset 8b-shapes --device cuda --concurrency 1,8,32 --per-client 2 --tokens 50
fi
