#!/usr/bin/env bash
# Run on a GPU machine, from the repository root: sets up .venv if needed, generates synthetic
# iNat-shaped JPEGs, and prints img/s of fastinat's loader, the scratch CNN and ResNet50 at
# 224 px (see benchmarks/gpu.py). Extra arguments go to benchmarks.gpu, e.g. --bs 256.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: running on $(.venv/bin/python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
.venv/bin/python -m benchmarks.gpu --images 4000 --size 224 --bs 128 --workers "$(nproc)" "$@"
