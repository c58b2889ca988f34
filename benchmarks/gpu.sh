#!/usr/bin/env bash
# One go on a GPU host: build the CUDA extension, run the tests (the CUDA ones
# included), then the GPU half of the benchmarks, writing every table, plot
# and log to the folder given as the argument.
#
#   benchmarks/gpu.sh OUT_DIR            (default OUT_DIR: benchmarks/results/gpu)
#
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0, Hopper), PYTHON (python3).
# Needs torch with CUDA and the package's dependencies already installed; no
# network is used.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export FORCE_CUDA=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
  nvidia-smi || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.log"

echo "== build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
"$PYTHON" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3 | tee "$OUT/build.log"

echo "== tests"
set +e
"$PYTHON" -m pytest -q tests/test_ops_transfer_rows.py tests/test_ops_segment_mean.py \
  -p no:cacheprovider 2>&1 | tee "$OUT/tests_ops.log"
tests_status=${PIPESTATUS[0]}
set -e

echo "== benchmarks"
"$PYTHON" benchmarks/bench_transfer_rows.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_transfer_rows.log"
"$PYTHON" benchmarks/bench_scaling.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_scaling.log"
echo "tests exit status: $tests_status"
exit "$tests_status"
