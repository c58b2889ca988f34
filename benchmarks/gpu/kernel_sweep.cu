// Variants of transfer_rows_'s row-copy kernels, for benchmarks/kernel_sweep.py
// (a GPU-only tuning harness; the library's own kernels live in csrc/cuda).
// Each variant copies target[target_ids[i]] = source[source_ids[i]] for dense
// rows of 16-byte vectors (same dtype) or float32 -> bfloat16 packs, and
// differs in one of the things that decide how many bytes are in flight:
//   kUnroll    vectors a thread loads before it stores them;
//   kPrefetch  the next pair's ids are loaded before the current row's copy,
//              so that the grid-stride loop does not wait on them;
//   kStreaming loads and stores with the evict-first hint (__ldcs/__stcs):
//              every byte is touched once;
// and, at launch, threads per block and the grid (waves of resident blocks,
// 0: one block per rows_per_block pairs, no grid-stride loop).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>

#include <algorithm>

namespace {

template <bool kStreaming, typename T>
__device__ __forceinline__ T load(const T* address) {
  if constexpr (kStreaming) {
    return __ldcs(address);
  } else {
    return *address;
  }
}

template <bool kStreaming, typename T>
__device__ __forceinline__ void store(T* address, T value) {
  if constexpr (kStreaming) {
    __stcs(address, value);
  } else {
    *address = value;
  }
}

struct Same {
  __device__ __forceinline__ uint4 operator()(uint4 value) const {
    return value;
  }
};

// Four float32 in, four bfloat16 out (round to nearest even).
struct ToBFloat16 {
  __device__ __forceinline__ uint2 operator()(float4 value) const {
    const __nv_bfloat162 low = __floats2bfloat162_rn(value.x, value.y);
    const __nv_bfloat162 high = __floats2bfloat162_rn(value.z, value.w);
    return make_uint2(*reinterpret_cast<const uint32_t*>(&low),
                      *reinterpret_cast<const uint32_t*>(&high));
  }
};

template <typename in_t, typename out_t, int kUnroll, bool kPrefetch, bool kStreaming,
          typename Convert>
__global__ void rows_kernel(out_t* __restrict__ target, const in_t* __restrict__ source,
                            const int64_t* __restrict__ target_ids,
                            const int64_t* __restrict__ source_ids, int64_t pairs,
                            int64_t units_per_row) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  int64_t source_row = 0, target_row = 0;
  if (kPrefetch && pair < pairs) {
    source_row = source_ids[pair];
    target_row = target_ids[pair];
  }
  for (; pair < pairs; pair += step) {
    if (!kPrefetch) {
      source_row = source_ids[pair];
      target_row = target_ids[pair];
    }
    int64_t next_source = 0, next_target = 0;
    if (kPrefetch && pair + step < pairs) {
      next_source = source_ids[pair + step];
      next_target = target_ids[pair + step];
    }
    const in_t* in = source + source_row * units_per_row;
    out_t* out = target + target_row * units_per_row;
    for (int64_t v = threadIdx.x; v < units_per_row; v += kUnroll * blockDim.x) {
      in_t values[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = v + u * blockDim.x;
        if (j < units_per_row) {
          values[u] = load<kStreaming>(in + j);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = v + u * blockDim.x;
        if (j < units_per_row) {
          store<kStreaming>(out + j, Convert{}(values[u]));
        }
      }
    }
    source_row = next_source;
    target_row = next_target;
  }
}

// Variant number = unroll index (0: 1, 1: 2, 2: 4, 3: 8) * 4 + prefetch * 2 + streaming.
template <typename in_t, typename out_t, typename Convert>
auto kernel_table() {
  using Kernel = void (*)(out_t*, const in_t*, const int64_t*, const int64_t*, int64_t, int64_t);
  static const Kernel table[] = {
      rows_kernel<in_t, out_t, 1, false, false, Convert>,
      rows_kernel<in_t, out_t, 1, false, true, Convert>,
      rows_kernel<in_t, out_t, 1, true, false, Convert>,
      rows_kernel<in_t, out_t, 1, true, true, Convert>,
      rows_kernel<in_t, out_t, 2, false, false, Convert>,
      rows_kernel<in_t, out_t, 2, false, true, Convert>,
      rows_kernel<in_t, out_t, 2, true, false, Convert>,
      rows_kernel<in_t, out_t, 2, true, true, Convert>,
      rows_kernel<in_t, out_t, 4, false, false, Convert>,
      rows_kernel<in_t, out_t, 4, false, true, Convert>,
      rows_kernel<in_t, out_t, 4, true, false, Convert>,
      rows_kernel<in_t, out_t, 4, true, true, Convert>,
      rows_kernel<in_t, out_t, 8, false, false, Convert>,
      rows_kernel<in_t, out_t, 8, false, true, Convert>,
      rows_kernel<in_t, out_t, 8, true, false, Convert>,
      rows_kernel<in_t, out_t, 8, true, true, Convert>,
  };
  return table;
}

constexpr int kUnrolls[] = {1, 2, 4, 8};

// The library's block shape: (threads per row) x (rows), threads per row the
// power of two that gives each thread about `unroll` units.
dim3 block_for(int64_t units, int unroll, int threads) {
  const int64_t wanted = (units + unroll - 1) / unroll;
  int threads_x = 1;
  while (threads_x < wanted && threads_x < threads) {
    threads_x *= 2;
  }
  return dim3(threads_x, threads / threads_x);
}

unsigned int grid_for(int64_t pairs, unsigned int rows_per_block, int threads, int waves,
                      int device) {
  const int64_t needed = (pairs + rows_per_block - 1) / rows_per_block;
  if (waves == 0) {
    return static_cast<unsigned int>(std::max<int64_t>(1, needed));
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t resident = int64_t{sms} * (2048 / threads) * waves;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(needed, resident)));
}

template <typename in_t, typename out_t, typename Convert>
void launch(at::Tensor& target, const at::Tensor& target_ids, const at::Tensor& source,
            const at::Tensor& source_ids, int64_t variant, int64_t threads, int64_t waves,
            int64_t units_per_row) {
  TORCH_CHECK(variant >= 0 && variant < 16, "variant in [0, 16)");
  const int unroll = kUnrolls[variant / 4];
  const int64_t pairs = target_ids.numel();
  const dim3 block = block_for(units_per_row, unroll, static_cast<int>(threads));
  const unsigned int grid = grid_for(pairs, block.y, static_cast<int>(threads),
                                     static_cast<int>(waves), target.get_device());
  auto stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  kernel_table<in_t, out_t, Convert>()[variant]<<<grid, block, 0, stream>>>(
      reinterpret_cast<out_t*>(target.data_ptr()),
      reinterpret_cast<const in_t*>(source.const_data_ptr()), target_ids.data_ptr<int64_t>(),
      source_ids.data_ptr<int64_t>(), pairs, units_per_row);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void copy_rows(at::Tensor target, at::Tensor target_ids, at::Tensor source,
               at::Tensor source_ids, int64_t variant, int64_t threads, int64_t waves) {
  TORCH_CHECK(target.dtype() == source.dtype() && target.is_contiguous() &&
                  source.is_contiguous() && target.size(1) * target.element_size() % 16 == 0,
              "copy_rows: dense rows of one dtype, a multiple of 16 bytes wide");
  launch<uint4, uint4, Same>(target, target_ids, source, source_ids, variant, threads, waves,
                             target.size(1) * target.element_size() / 16);
}

void convert_rows(at::Tensor target, at::Tensor target_ids, at::Tensor source,
                  at::Tensor source_ids, int64_t variant, int64_t threads, int64_t waves) {
  TORCH_CHECK(source.scalar_type() == at::kFloat && target.scalar_type() == at::kBFloat16 &&
                  target.is_contiguous() && source.is_contiguous() && target.size(1) % 4 == 0,
              "convert_rows: dense float32 -> bfloat16 rows, a multiple of 4 wide");
  launch<float4, uint2, ToBFloat16>(target, target_ids, source, source_ids, variant, threads, waves,
                                 target.size(1) / 4);
}
