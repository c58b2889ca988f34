// CUDA kernels of vocabxfer::transfer_rows_. A block copies several row pairs
// at once: its threads are (threads per row) x (rows), each thread loading up
// to kUnroll vectors of its row before storing them. Every kernel first reads
// the validation status (when the indices were checked on the device) and
// writes nothing if a check failed.
//
// The unroll and the grid come from benchmarks/kernel_sweep.py on an H200
// (results/kernel_sweep.md): one block per group of rows (no grid-stride
// waves), unroll 4 for rows under kWideRowBytes and for converting copies,
// unroll 1 (more blocks, one vector a thread per pass) for wider rows. On the
// sweep's own run this took the worst of 44 cases of 100 MB or more from 87%
// of the copy ceiling to 90% (chosen on those numbers: a fresh run owed).
#include <c10/cuda/CUDAException.h>
#include <c10/util/TypeCast.h>

#include "dispatch.cuh"

namespace vocabxfer {
namespace cuda {
namespace {

constexpr int kDefaultUnroll = 4;
constexpr int64_t kWideRowBytes = 6144;

// Same dtype, dense rows: a row is `vectors_per_row` values of vector_t.
template <typename vector_t, typename index_t, int kUnroll>
__global__ void __launch_bounds__(kThreadsPerBlock) copy_rows_kernel(
    char* __restrict__ target,
    const char* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    int64_t pairs,
    int64_t vectors_per_row,
    int64_t target_row_bytes,
    int64_t source_row_bytes,
    const uint32_t* __restrict__ status) {
  if (status != nullptr && *status != 0) {
    return;
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; pair < pairs;
       pair += step) {
    const auto* in = reinterpret_cast<const vector_t*>(
        source + static_cast<int64_t>(source_ids[pair]) * source_row_bytes);
    auto* out = reinterpret_cast<vector_t*>(
        target + static_cast<int64_t>(target_ids[pair]) * target_row_bytes);
    for (int64_t v = threadIdx.x; v < vectors_per_row; v += kUnroll * blockDim.x) {
      vector_t values[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = v + u * blockDim.x;
        if (j < vectors_per_row) {
          values[u] = in[j];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = v + u * blockDim.x;
        if (j < vectors_per_row) {
          out[j] = values[u];
        }
      }
    }
  }
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T values[N];
};

// Different dtypes, dense and aligned rows: kPack elements are loaded and
// stored at once, each converted exactly as Tensor.to converts on the GPU.
template <typename target_t, typename source_t, typename index_t, int kPack>
__global__ void __launch_bounds__(kThreadsPerBlock) convert_packed_kernel(
    target_t* __restrict__ target,
    const source_t* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    int64_t pairs,
    int64_t packs_per_row,
    int64_t target_row_stride,
    int64_t source_row_stride,
    const uint32_t* __restrict__ status) {
  if (status != nullptr && *status != 0) {
    return;
  }
  using source_pack = Pack<source_t, kPack>;
  using target_pack = Pack<target_t, kPack>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; pair < pairs;
       pair += step) {
    const auto* in = reinterpret_cast<const source_pack*>(
        source + static_cast<int64_t>(source_ids[pair]) * source_row_stride);
    auto* out = reinterpret_cast<target_pack*>(
        target + static_cast<int64_t>(target_ids[pair]) * target_row_stride);
    for (int64_t p = threadIdx.x; p < packs_per_row; p += kDefaultUnroll * blockDim.x) {
      source_pack loaded[kDefaultUnroll];
#pragma unroll
      for (int u = 0; u < kDefaultUnroll; ++u) {
        const int64_t j = p + u * blockDim.x;
        if (j < packs_per_row) {
          loaded[u] = in[j];
        }
      }
#pragma unroll
      for (int u = 0; u < kDefaultUnroll; ++u) {
        const int64_t j = p + u * blockDim.x;
        if (j < packs_per_row) {
          target_pack converted;
#pragma unroll
          for (int k = 0; k < kPack; ++k) {
            converted.values[k] = c10::convert<target_t>(loaded[u].values[k]);
          }
          out[j] = converted;
        }
      }
    }
  }
}

// Any dtypes and any strides: one element at a time.
template <typename target_t, typename source_t, typename index_t>
__global__ void __launch_bounds__(kThreadsPerBlock) convert_strided_kernel(
    target_t* __restrict__ target,
    const source_t* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    int64_t pairs,
    int64_t width,
    int64_t target_row_stride,
    int64_t target_col_stride,
    int64_t source_row_stride,
    int64_t source_col_stride,
    const uint32_t* __restrict__ status) {
  if (status != nullptr && *status != 0) {
    return;
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; pair < pairs;
       pair += step) {
    target_t* out = target + static_cast<int64_t>(target_ids[pair]) * target_row_stride;
    const source_t* in = source + static_cast<int64_t>(source_ids[pair]) * source_row_stride;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      out[j * target_col_stride] = c10::convert<target_t>(in[j * source_col_stride]);
    }
  }
}

bool aligned(const void* pointer, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % static_cast<uintptr_t>(bytes) == 0;
}

// The widest power-of-two byte count (at most 16) dividing every address a
// vectorised copy of dense rows would touch.
int vector_bytes_for(const MatrixView& target, const MatrixView& source, int64_t element_bytes) {
  const uint64_t mixed = reinterpret_cast<uint64_t>(target.data) |
      reinterpret_cast<uint64_t>(source.data) |
      static_cast<uint64_t>(target.width * element_bytes) |
      static_cast<uint64_t>(target.row_stride * element_bytes) |
      static_cast<uint64_t>(source.row_stride * element_bytes);
  for (int bytes = 16; bytes > 1; bytes /= 2) {
    if (mixed % bytes == 0) {
      return bytes;
    }
  }
  return 1;
}

template <typename vector_t, typename index_t, int kUnroll>
void launch_copy_unrolled(const MatrixView& target, const index_t* target_ids,
                          const MatrixView& source, const index_t* source_ids, int64_t pairs,
                          int64_t element_bytes, const uint32_t* status, cudaStream_t stream) {
  const int64_t vectors = target.width * element_bytes / static_cast<int64_t>(sizeof(vector_t));
  const dim3 block = row_block(vectors, kUnroll);
  copy_rows_kernel<vector_t, index_t, kUnroll><<<row_grid(pairs, block.y), block, 0, stream>>>(
      static_cast<char*>(target.data), static_cast<const char*>(source.data), target_ids,
      source_ids, pairs, vectors, target.row_stride * element_bytes,
      source.row_stride * element_bytes, status);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename vector_t, typename index_t>
void launch_copy(const MatrixView& target, const index_t* target_ids, const MatrixView& source,
                 const index_t* source_ids, int64_t pairs, int64_t element_bytes,
                 const uint32_t* status, cudaStream_t stream) {
  if (target.width * element_bytes >= kWideRowBytes) {
    launch_copy_unrolled<vector_t, index_t, 1>(target, target_ids, source, source_ids, pairs,
                                               element_bytes, status, stream);
  } else {
    launch_copy_unrolled<vector_t, index_t, kDefaultUnroll>(target, target_ids, source,
                                                            source_ids, pairs, element_bytes,
                                                            status, stream);
  }
}

template <typename index_t>
void copy_same_dtype(const MatrixView& target, const index_t* target_ids,
                     const MatrixView& source, const index_t* source_ids, int64_t pairs,
                     int64_t element_bytes, const uint32_t* status, cudaStream_t stream) {
  const auto args = [&](auto vector_tag) {
    using vector_t = typename decltype(vector_tag)::type;
    launch_copy<vector_t, index_t>(target, target_ids, source, source_ids, pairs, element_bytes,
                                   status, stream);
  };
  switch (vector_bytes_for(target, source, element_bytes)) {
    case 16: args(TypeTag<uint4>{}); break;
    case 8: args(TypeTag<uint2>{}); break;
    case 4: args(TypeTag<uint32_t>{}); break;
    case 2: args(TypeTag<uint16_t>{}); break;
    default: args(TypeTag<uint8_t>{}); break;
  }
}

// Elements per pack: 16 bytes of the wider type.
template <typename target_t, typename source_t>
constexpr int max_pack() {
  return 16 / static_cast<int>(sizeof(target_t) > sizeof(source_t) ? sizeof(target_t)
                                                                     : sizeof(source_t));
}

template <typename target_t, typename source_t>
bool packable(const MatrixView& target, const MatrixView& source, int pack) {
  return target.col_stride == 1 && source.col_stride == 1 && target.width % pack == 0 &&
      target.row_stride % pack == 0 && source.row_stride % pack == 0 &&
      aligned(target.data, pack * sizeof(target_t)) &&
      aligned(source.data, pack * sizeof(source_t));
}

template <typename target_t, typename source_t, typename index_t>
void convert(const MatrixView& target, const index_t* target_ids, const MatrixView& source,
             const index_t* source_ids, int64_t pairs, const uint32_t* status,
             cudaStream_t stream) {
  auto* out = static_cast<target_t*>(target.data);
  const auto* in = static_cast<const source_t*>(source.data);
  constexpr int kPack = max_pack<target_t, source_t>();
  if (packable<target_t, source_t>(target, source, kPack)) {
    const int64_t packs = target.width / kPack;
    const dim3 block = row_block(packs, kDefaultUnroll);
    convert_packed_kernel<target_t, source_t, index_t, kPack>
        <<<row_grid(pairs, block.y), block, 0, stream>>>(
            out, in, target_ids, source_ids, pairs, packs, target.row_stride,
            source.row_stride, status);
  } else {
    const dim3 block = row_block(target.width, 1);
    convert_strided_kernel<target_t, source_t, index_t>
        <<<row_grid(pairs, block.y), block, 0, stream>>>(
            out, in, target_ids, source_ids, pairs, target.width, target.row_stride,
            target.col_stride, source.row_stride, source.col_stride, status);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

} // namespace

void launch_transfer_rows(MatrixView target, IndexView target_ids, MatrixView source,
                          IndexView source_ids, const uint32_t* status, cudaStream_t stream) {
  dispatch_index(target_ids, [&](auto index_tag) {
    using index_t = typename decltype(index_tag)::type;
    const auto* targets = static_cast<const index_t*>(target_ids.data);
    const auto* sources = static_cast<const index_t*>(source_ids.data);
    const int64_t pairs = target_ids.size;
    if (target.dtype == source.dtype && target.col_stride == 1 && source.col_stride == 1) {
      copy_same_dtype<index_t>(target, targets, source, sources, pairs,
                               c10::elementSize(target.dtype), status, stream);
      return;
    }
    dispatch_float(target.dtype, [&](auto target_tag) {
      using target_t = typename decltype(target_tag)::type;
      dispatch_float(source.dtype, [&](auto source_tag) {
        using source_t = typename decltype(source_tag)::type;
        convert<target_t, source_t, index_t>(target, targets, source, sources, pairs, status,
                                             stream);
      });
    });
  });
}

} // namespace cuda
} // namespace vocabxfer
