#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (no network; CuPy and pytest there):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# CuPy test suite (gradient checks on CuPy arrays, NumPy/CuPy parity, fused-kernel parity),
# then the GPU speed benchmarks. MINIVD_DATA should point at a folder holding mnist.npz.
set -u -o pipefail
out=${1:-${OUT:-/tmp/minivd-gpu}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
unset CI  # CI selects the 25-example hypothesis profile, which would override the gpu one
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# stop here, rather than have every gpu test skip and pytest pass, when CuPy or the device fails
python3 -c "import cupy, numpy; assert cupy.cuda.runtime.getDeviceCount() > 0
print('cupy', cupy.__version__, 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt" \
  || { echo "CuPy or the GPU is unusable: stopping" | tee -a "$out/gpu.txt"; exit 1; }
# the parity files first (pytest collects a folder argument whole, in file order, so they are
# a call of their own), then the rest of the gpu tests; skips listed; 120 + 180 + 3 x 90 s
# stays under the device tool's 600 s per call (the gpu tests number 127 since session 9,
# 60 when the last device run took 32 s for them). The exit status is 1 if either call failed.
status=0
timeout "${GPU_PARITY_TIMEOUT:-120}" python3 -m pytest -m gpu -q -rs -p no:cacheprovider \
  -o addopts="" tests/test_gpu_parity.py tests/test_conv_gpu.py \
  2>&1 | tee "$out/gpu_tests.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout "${GPU_TEST_TIMEOUT:-180}" python3 -m pytest -m gpu -q -rs -p no:cacheprovider \
  -o addopts="" tests --ignore=tests/test_gpu_parity.py --ignore=tests/test_conv_gpu.py \
  2>&1 | tee -a "$out/gpu_tests.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
for b in dense conv; do
  timeout 90 python3 "benchmarks/bench_$b.py" --backend cupy 2>&1 | tee "$out/bench_${b}_gpu.txt"
done
timeout 90 python3 benchmarks/bench_train.py --backend cupy --steps 100 2>&1 \
  | tee "$out/bench_train_gpu.txt"
exit $status
