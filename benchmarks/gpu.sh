#!/usr/bin/env bash
# One go on a bare GPU host: build, the whole test suite, vocabxfer doctor,
# the GPU benchmarks (and the CPU klue case), then summary.md with pass or
# fail per goal. Everything is written to the folder given as the argument.
#
#   benchmarks/gpu.sh OUT_DIR            (default OUT_DIR: benchmarks/results/gpu)
#
# Refinement is timed on klue/bert-base's vocab.txt and NSMC passages, which
# must travel with the tree: `python3 benchmarks/prepare_gpu_data.py` writes
# them to .gpu-data/ (git-ignored; carry it), or set GPU_DATA.
#
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0, Hopper), PYTHON (python3),
# MAX_JOBS (default: the number of cores). Needs torch with CUDA and the
# package's dependencies already installed; no network is used. The build
# uses the host's default compiler first: vocabxfer links the shared C++
# runtime whatever the compiler, or refuses the build, in which case it is
# retried with /usr/bin/g++ and the refusal is kept in build.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
: > "$OUT/status.txt"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export FORCE_CUDA=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

{
  nvidia-smi || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  echo "CXX=${CXX:-default} $(${CXX:-c++} --version | head -n 1)"
  echo "cores $(nproc)"
} 2>&1 | tee "$OUT/machine.log"

step "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, default compiler)"
"$PYTHON" -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1
build=$?
if [ "$build" != 0 ]; then
  grep -h "vocabxfer: refusing the build" "$OUT/build.log"
  step "build again with CXX=/usr/bin/g++"
  CXX=/usr/bin/g++ CC=/usr/bin/gcc "$PYTHON" -m pip install --no-build-isolation --no-deps -e . \
    > "$OUT/build-retry.log" 2>&1
  echo "build-retry $?" >> "$OUT/status.txt"
fi
echo "build $build" >> "$OUT/status.txt"
tail -n 3 "$OUT/build.log"

step "tests (the whole suite)"
"$PYTHON" -m pytest -q -p no:cacheprovider > "$OUT/tests.log" 2>&1
echo "tests $?" >> "$OUT/status.txt"
tail -n 3 "$OUT/tests.log"

step "the GPU paths of the ops and distributed refinement, on their own"
# Host, device and checked indices with their synchronisation counts; two
# ranks over gloo with the model on the GPU, and over NCCL where there are
# two GPUs (NCCL refuses two ranks on one GPU).
"$PYTHON" -m pytest -v -p no:cacheprovider tests/test_ops_index_paths.py \
  tests/test_distributed.py > "$OUT/tests_gpu_paths.log" 2>&1
echo "tests_gpu_paths $?" >> "$OUT/status.txt"
tail -n 3 "$OUT/tests_gpu_paths.log"

step "vocabxfer doctor"
"$PYTHON" -m vocabxfer doctor 2>&1 | tee "$OUT/doctor.log"
echo "doctor ${PIPESTATUS[0]}" >> "$OUT/status.txt"

step "benchmarks"
"$PYTHON" benchmarks/bench_transfer_rows.py --device cuda --out "$OUT" > "$OUT/bench_transfer_rows_cuda.log" 2>&1
echo "bench_transfer_rows_cuda $?" >> "$OUT/status.txt"
"$PYTHON" benchmarks/bench_scaling.py --device cuda --out "$OUT" > "$OUT/bench_scaling_cuda.log" 2>&1
echo "bench_scaling_cuda $?" >> "$OUT/status.txt"
"$PYTHON" benchmarks/bench_transfer_rows.py --device cpu --quick --out "$OUT" > "$OUT/bench_transfer_rows_cpu.log" 2>&1
echo "bench_transfer_rows_cpu $?" >> "$OUT/status.txt"

step "refine (random weights of the real shapes, 500 steps)"
GPU_DATA=${GPU_DATA:-.gpu-data}
for shape in minilm-random bert-base smollm2; do
  "$PYTHON" benchmarks/bench_refine.py --device cuda --shape "$shape" --steps 500 --rounds 1 \
    --source-vocab "$GPU_DATA/klue-bert-base-vocab.txt" --corpus-file "$GPU_DATA/nsmc.txt" \
    --out "$OUT" > "$OUT/bench_refine_$shape.log" 2>&1
  echo "bench_refine_$shape $?" >> "$OUT/status.txt"
  tail -n 4 "$OUT/bench_refine_$shape.log"
done

step "summary"
"$PYTHON" benchmarks/gpu_summary.py "$OUT"
