#!/usr/bin/env bash
# The GPU benchmark in one call (about 5–8 minutes on an H100, compilation included), for a machine with a
# CUDA build of torch and no network: diffstack itself is installed without dependencies; diffusers,
# transformers and pydantic come from the environment or from wheels placed in bench/wheels/.
#   bash bench/gpu.sh            # prints the table of bench/gpu.py, and the CUDA rows of `python -m bench`
# Results go to ${OUT:-bench/out}/gpu.txt as well.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/out}"
mkdir -p "$out"
if [ -d bench/wheels ]; then
    python -m pip install --quiet --no-index --find-links bench/wheels diffusers transformers pydantic safetensors pluggy pyyaml tqdm
fi
python -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
timeout 420 python -m bench.gpu 2>&1 | tee -a "$out/gpu.txt"
timeout 120 python -m bench --device cuda --only unet load 2>&1 | tee -a "$out/gpu.txt"
