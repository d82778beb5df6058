#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (no network; CuPy and pytest there):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# CuPy test suite (gradient checks on CuPy arrays, NumPy/CuPy parity, fused-kernel parity),
# then the GPU speed benchmarks. MINIVD_DATA should point at a folder holding mnist.npz.
set -u -o pipefail
out=${1:-${OUT:-/tmp/minivd-gpu}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
  | tee -a "$out/gpu.txt"
timeout "${GPU_TEST_TIMEOUT:-240}" python3 -m pytest -m gpu -q -p no:cacheprovider \
  -o addopts="" 2>&1 | tee "$out/gpu_tests.txt" | tail -25
for b in dense conv; do
  timeout 120 python3 "benchmarks/bench_$b.py" --backend cupy 2>&1 | tee "$out/bench_${b}_gpu.txt"
done
timeout 120 python3 benchmarks/bench_train.py --backend cupy --steps 100 2>&1 \
  | tee "$out/bench_train_gpu.txt"
