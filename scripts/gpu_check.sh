#!/usr/bin/env bash
# imbal's CUDA path on one GPU in at most ~8 minutes: AMP float16/bfloat16, channels_last and
# torch.compile throughput, no host sync inside a training step, deterministic mode, mid-epoch
# stop and resume, the class-balanced sampler on the device, the memory high-water mark and the
# fraction of the GPU's peak for ResNet-18/32 training. Writes a JSON summary; exits 2 without
# CUDA, 1 if a check failed. See imbal/bench/gpu_check.py.
#   scripts/gpu_check.sh [--out FILE] [--budget-s 420] [--only amp_float16,resume]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PYTHON" -m imbal.bench.gpu_check "$@"
