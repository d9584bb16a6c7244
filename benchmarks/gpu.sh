#!/usr/bin/env bash
# The GPU check (benchmarks/gpu.py): exit times of every command, throughput with GPU
# utilisation, one epoch of each preset; writes benchmarks/gpu_results.json in about 8 minutes.
#
#   bash benchmarks/gpu.sh                    # on the GPU machine, from anywhere
#   bash benchmarks/gpu.sh --budget 300       # extra arguments go to python -m benchmarks.gpu
#   bash benchmarks/gpu.sh --download-wheels  # on a machine with PyPI, for a GPU machine without
#
# Python: .venv when it has torch (`make install`), else the machine's own python3 (or
# GPU_CHECK_PYTHON) with its
# torch/torchvision, plus what it lacks (benchmarks/gpu-wheels.txt): from PyPI with pip where
# there is a registry, else from benchmarks/wheels/ (--download-wheels, made elsewhere for the
# GPU machine's Python: GPU_PYTHON=3.12 by default), installed with --no-index into
# benchmarks/.gpu-site and put on PYTHONPATH. fastinat itself runs from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels
SITE=benchmarks/.gpu-site

if [ "${1:-}" = "--download-wheels" ]; then
    py="${GPU_PYTHON:-3.12}"
    mkdir -p "$WHEELS"
    grep -v '^#' benchmarks/gpu-wheels.txt | xargs python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$py" --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS"
    echo "wheels for Python $py in $WHEELS: $(ls "$WHEELS" | wc -l) files, $(du -sh "$WHEELS" | cut -f1)"
    exit 0
fi

if [ -z "${GPU_CHECK_PYTHON:-}" ] && [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch, fastai' 2>/dev/null; then
    PY=.venv/bin/python
else
    PY="${GPU_CHECK_PYTHON:-python3}"
    if ! $PY -c 'import torch' 2>/dev/null; then
        echo "no PyTorch here: run make install first (or use a machine with torch)" >&2
        exit 1
    fi
    if ! $PY -c 'import fastai, optuna, captum' 2>/dev/null; then
        if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
            $PY -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" --upgrade "$WHEELS"/*.whl
        else
            $PY -m pip install --quiet --target "$SITE" --no-deps $(grep -v '^#' benchmarks/gpu-wheels.txt)
        fi
    fi
    export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# torchrun and the commands the check starts must find the same Python first
export PATH="$(dirname "$($PY -c 'import sys; print(sys.executable)')"):$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi: running on $($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
exec $PY -m benchmarks.gpu "$@"
