#!/usr/bin/env bash
# One go on a bare GPU host: build, the whole test suite, vocabxfer doctor,
# the GPU benchmarks (and the CPU klue case), then summary.md with pass or
# fail per goal. Everything is written to the folder given as the argument.
#
#   benchmarks/gpu.sh OUT_DIR            (default OUT_DIR: benchmarks/gpu/results)
#
# Refinement is timed on klue/bert-base's vocab.txt and NSMC passages, which
# must travel with the tree: `python3 benchmarks/gpu/prepare_gpu_data.py` writes
# them to .gpu-data/ (git-ignored; carry it), or set GPU_DATA.
#
# GPU_PARTS picks what runs after the build, to split the work over two
# short leases (default: all of them): paths (the ops' index paths and the
# distributed tests), doctor, suite (the whole test suite), transfer
# (bench_transfer_rows on GPU and CPU), sweep (kernel_sweep), scaling
# (bench_scaling), refine (the shapes in GPU_REFINE_SHAPES, default all
# three), profile (100 MiniLM-sized refine steps under cProfile and under
# torch.profiler, in profile/, and 500 with torch's own attention backend
# choice, cuDNN's included, and 500 without CUDA graphs; GPU_PROFILE_SHAPES
# adds torch.profiler tables of other shapes), budget (refine(seconds=S)
# with the default budgets, 30 s for the BERT shapes and 60 s for SmolLM2's:
# how many steps fit, the counts the CPU's quality runs stand in for;
# GPU_BUDGETS="shape:seconds ..." picks others), zerocopy (zero_copy_probe:
# would the kernel gain by reading host ids from pinned memory itself; last,
# in a process of its own).
# GPU_REFINE_BASELINE times another checkout's refine beside this one's.
# summary.md covers what the folder holds. The device tool brings back only
# so many files: pack OUT_DIR into one archive before it returns.
#
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0, Hopper), PYTHON (python3),
# MAX_JOBS (default: the number of cores). Needs torch with CUDA and the
# package's dependencies already installed; no network is used. The build
# uses the host's default compiler first: vocabxfer links the shared C++
# runtime whatever the compiler, or refuses the build, in which case it is
# retried with /usr/bin/g++ and the refusal is kept in build.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu/results}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
: > "$OUT/status.txt"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export FORCE_CUDA=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }
GPU_PARTS=${GPU_PARTS:-paths doctor suite transfer sweep scaling refine budget profile zerocopy}
want() { [[ " $GPU_PARTS " == *" $1 "* ]]; }

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

# The kernel variants compile (CPU only) while the tests run.
sweep_build=
if want sweep; then
  "$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks/gpu'); import kernel_sweep; \
kernel_sweep.compile_variants()" > "$OUT/kernel_sweep_build.log" 2>&1 &
  sweep_build=$!
fi

if want paths; then
step "the GPU paths of the ops and distributed refinement, on their own"
# Host, device and checked indices with their synchronisation counts; two
# ranks over gloo with the model on the GPU, and over NCCL where there are
# two GPUs (NCCL refuses two ranks on one GPU).
timeout 300 "$PYTHON" -m pytest -v -p no:cacheprovider tests/test_ops_index_paths.py \
  tests/test_distributed.py > "$OUT/tests_gpu_paths.log" 2>&1
echo "tests_gpu_paths $?" >> "$OUT/status.txt"
tail -n 3 "$OUT/tests_gpu_paths.log"
fi

if want doctor; then
step "vocabxfer doctor"
timeout 120 "$PYTHON" -m vocabxfer doctor 2>&1 | tee "$OUT/doctor.log"
echo "doctor ${PIPESTATUS[0]}" >> "$OUT/status.txt"
fi

if want suite; then
step "tests (the whole suite)"
# Spread over 8 workers where pytest-xdist is installed (it is on the lent
# machines' image).
workers=$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 600 "$PYTHON" -m pytest -q -p no:cacheprovider $workers > "$OUT/tests.log" 2>&1
echo "tests $?" >> "$OUT/status.txt"
tail -n 3 "$OUT/tests.log"
fi
if [ -n "$sweep_build" ]; then
  wait "$sweep_build"
  echo "kernel_sweep_build $?" >> "$OUT/status.txt"
fi

step "benchmarks"
if want transfer; then
  timeout 300 "$PYTHON" benchmarks/speed/bench_transfer_rows.py --device cuda --out "$OUT" > "$OUT/bench_transfer_rows_cuda.log" 2>&1
  echo "bench_transfer_rows_cuda $?" >> "$OUT/status.txt"
  timeout 300 "$PYTHON" benchmarks/speed/bench_transfer_rows.py --device cpu --quick --out "$OUT" > "$OUT/bench_transfer_rows_cpu.log" 2>&1
  echo "bench_transfer_rows_cpu $?" >> "$OUT/status.txt"
fi
if want sweep; then
  timeout 300 "$PYTHON" benchmarks/gpu/kernel_sweep.py --out "$OUT" > "$OUT/kernel_sweep.log" 2>&1
  echo "kernel_sweep $?" >> "$OUT/status.txt"
  tail -n 12 "$OUT/kernel_sweep.log"
fi
if want scaling; then
  timeout 300 "$PYTHON" benchmarks/speed/bench_scaling.py --device cuda --out "$OUT" > "$OUT/bench_scaling_cuda.log" 2>&1
  echo "bench_scaling_cuda $?" >> "$OUT/status.txt"
fi

GPU_DATA=${GPU_DATA:-.gpu-data}
# What every refine benchmark below reads: klue's vocab.txt, NSMC passages,
# and for SmolLM2's shape SmolLM2's own tokenizer where it travelled
# (source_tokenizer_of SHAPE sets the array source_tokenizer).
refine_data=(--source-vocab "$GPU_DATA/klue-bert-base-vocab.txt" --corpus-file "$GPU_DATA/nsmc.txt")
source_tokenizer_of() {
  source_tokenizer=()
  if [ "$1" = smollm2 ] && [ -d "$GPU_DATA/smollm2-tokenizer" ]; then
    source_tokenizer=(--source-tokenizer "$GPU_DATA/smollm2-tokenizer")
  fi
}
# GPU_REFINE_BASELINE: another checkout's vocabxfer (its Python is enough:
# the ops fall back to torch) timed side by side with this one, for the
# shapes in GPU_BASELINE_SHAPES (default: every shape). Made to travel with
# the tree by, say, `mkdir -p .gpu-data/baseline && git archive REV
# vocabxfer | tar -x -C .gpu-data/baseline`.
baseline=()
[ -n "${GPU_REFINE_BASELINE:-}" ] && baseline=(--baseline "$GPU_REFINE_BASELINE")
want refine && step "refine (random weights of the real shapes, 500 steps)"
for shape in $(want refine && echo "${GPU_REFINE_SHAPES:-minilm-random bert-base smollm2}"); do
  source_tokenizer_of "$shape"
  against=()
  [[ " ${GPU_BASELINE_SHAPES:-$shape} " == *" $shape "* ]] && against=("${baseline[@]}")
  timeout 400 "$PYTHON" benchmarks/speed/bench_refine.py --device cuda --shape "$shape" --steps 500 --rounds 1 \
    "${refine_data[@]}" "${source_tokenizer[@]}" "${against[@]}" --out "$OUT" > "$OUT/bench_refine_$shape.log" 2>&1
  echo "bench_refine_$shape $?" >> "$OUT/status.txt"
  tail -n 4 "$OUT/bench_refine_$shape.log"
done

if want budget; then
  step "refine's default time budgets: how many steps fit"
  for pair in ${GPU_BUDGETS:-minilm-random:30 bert-base:30 smollm2:60}; do
    shape=${pair%%:*} seconds=${pair##*:}
    source_tokenizer_of "$shape"
    timeout 300 "$PYTHON" benchmarks/speed/bench_refine.py --device cuda --shape "$shape" --rounds 1 \
      --seconds "$seconds" "${refine_data[@]}" "${source_tokenizer[@]}" --out "$OUT" \
      > "$OUT/bench_refine_${shape}_budget.log" 2>&1
    echo "bench_refine_${shape}_budget $?" >> "$OUT/status.txt"
    tail -n 3 "$OUT/bench_refine_${shape}_budget.log"
  done
fi

if want profile; then
  step "profile: 100 MiniLM-sized refine steps under cProfile and torch.profiler; 500 with cuDNN's attention; 500 without CUDA graphs"
  mkdir -p "$OUT/profile"
  common=(--device cuda --shape minilm-random --rounds 1 "${refine_data[@]}")
  timeout 300 "$PYTHON" benchmarks/speed/bench_refine.py "${common[@]}" --steps 100 \
    --profile "$OUT/profile/refine_minilm.txt" --out "$OUT/profile" > "$OUT/profile/bench_refine.log" 2>&1
  echo "profile $?" >> "$OUT/status.txt"
  head -n 45 "$OUT/profile/refine_minilm.txt"
  # torch.profiler's tables for each shape in GPU_PROFILE_SHAPES.
  for shape in ${GPU_PROFILE_SHAPES:-minilm-random}; do
    source_tokenizer_of "$shape"
    timeout 300 "$PYTHON" benchmarks/speed/bench_refine.py "${common[@]}" --shape "$shape" --steps 100 \
      "${source_tokenizer[@]}" --torch-profile "$OUT/profile/refine_${shape}_kernels.txt" --out "$OUT/profile" \
      > "$OUT/profile/bench_refine_${shape}_kernels.log" 2>&1
    echo "profile_kernels_$shape $?" >> "$OUT/status.txt"
    head -n 20 "$OUT/profile/refine_${shape}_kernels.txt"
  done
  # refine leaves cuDNN's attention out on a GPU (attention_for_training):
  # torch's own choice, timed side by side.
  timeout 300 "$PYTHON" benchmarks/speed/bench_refine.py "${common[@]}" --steps 500 --sdpa torch \
    --out "$OUT" > "$OUT/bench_refine_minilm-random_sdpa-torch.log" 2>&1
  echo "bench_refine_minilm-random_sdpa-torch $?" >> "$OUT/status.txt"
  tail -n 4 "$OUT/bench_refine_minilm-random_sdpa-torch.log"
  # The same steps run one by one, not as a CUDA graph.
  timeout 300 "$PYTHON" benchmarks/speed/bench_refine.py "${common[@]}" --steps 500 --graphs off \
    --out "$OUT" > "$OUT/bench_refine_minilm-random_graphs-off.log" 2>&1
  echo "bench_refine_minilm-random_graphs-off $?" >> "$OUT/status.txt"
  tail -n 4 "$OUT/bench_refine_minilm-random_graphs-off.log"
fi

if want zerocopy; then
  step "host ids read by the kernel from pinned memory, or copied first (a probe)"
  [ -n "$sweep_build" ] || echo "(compiles kernel_sweep's variants first)"
  timeout 300 "$PYTHON" benchmarks/gpu/zero_copy_probe.py --out "$OUT" > "$OUT/zero_copy_probe.log" 2>&1
  echo "zero_copy_probe $?" >> "$OUT/status.txt"
  tail -n 10 "$OUT/zero_copy_probe.log"
fi

step "summary"
"$PYTHON" benchmarks/gpu/gpu_summary.py "$OUT"
