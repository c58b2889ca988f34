// CUDA kernel of vocabxfer::transfer_rows_. A block copies one row pair at a
// time (grid-stride over pairs), its threads striding over the row in the
// widest vector that the pointers, strides and row width allow.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../checks.h"

namespace vocabxfer {
namespace {

constexpr int kThreads = 256;

// Same dtype, dense rows: a row is `vectors_per_row` values of vector_t.
template <typename vector_t, typename index_t>
__global__ void copy_rows_kernel(
    char* __restrict__ target,
    const char* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    int64_t pairs,
    int64_t vectors_per_row,
    int64_t target_row_bytes,
    int64_t source_row_bytes) {
  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    auto* out = reinterpret_cast<vector_t*>(
        target + static_cast<int64_t>(target_ids[pair]) * target_row_bytes);
    const auto* in = reinterpret_cast<const vector_t*>(
        source + static_cast<int64_t>(source_ids[pair]) * source_row_bytes);
    for (int64_t v = threadIdx.x; v < vectors_per_row; v += blockDim.x) {
      out[v] = in[v];
    }
  }
}

// Any dtype pair and any strides: one element at a time, converted exactly
// as Tensor.to converts.
template <typename target_t, typename source_t, typename index_t>
__global__ void convert_rows_kernel(
    target_t* __restrict__ target,
    const source_t* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    int64_t pairs,
    int64_t width,
    int64_t target_row_stride,
    int64_t target_col_stride,
    int64_t source_row_stride,
    int64_t source_col_stride) {
  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    target_t* out = target + static_cast<int64_t>(target_ids[pair]) * target_row_stride;
    const source_t* in = source + static_cast<int64_t>(source_ids[pair]) * source_row_stride;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      out[j * target_col_stride] = c10::convert<target_t>(in[j * source_col_stride]);
    }
  }
}

// Threads per block: one per value of the row, in whole warps, at most
// kThreads; a narrow row then leaves no threads idle.
int threads_for(int64_t values_per_row) {
  const int64_t warps = (values_per_row + 31) / 32;
  return static_cast<int>(std::min<int64_t>(kThreads, std::max<int64_t>(1, warps) * 32));
}

// Blocks enough to fill every SM (2048 resident threads each), never more
// than there are pairs.
int64_t grid_for(int64_t pairs, int threads, int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t resident = int64_t{sms} * (2048 / threads);
  return std::max<int64_t>(1, std::min<int64_t>(pairs, resident));
}

// The widest power-of-two byte count (at most 16) dividing every address a
// vectorised copy would touch.
int vector_bytes_for(const at::Tensor& target, const at::Tensor& source) {
  const int64_t element_bytes = target.element_size();
  const uint64_t mixed =
      reinterpret_cast<uint64_t>(target.data_ptr()) |
      reinterpret_cast<uint64_t>(source.const_data_ptr()) |
      static_cast<uint64_t>(target.size(1) * element_bytes) |
      static_cast<uint64_t>(target.stride(0) * element_bytes) |
      static_cast<uint64_t>(source.stride(0) * element_bytes);
  for (int bytes = 16; bytes > 1; bytes /= 2) {
    if (mixed % bytes == 0) {
      return bytes;
    }
  }
  return 1;
}

template <typename vector_t, typename index_t>
void launch_copy_rows(
    at::Tensor& target,
    const at::Tensor& target_ids,
    const at::Tensor& source,
    const at::Tensor& source_ids,
    cudaStream_t stream) {
  const int64_t element_bytes = target.element_size();
  const int64_t pairs = target_ids.numel();
  const int64_t vectors = target.size(1) * element_bytes / static_cast<int64_t>(sizeof(vector_t));
  const int threads = threads_for(vectors);
  copy_rows_kernel<vector_t, index_t>
      <<<grid_for(pairs, threads, target.get_device()), threads, 0, stream>>>(
          static_cast<char*>(target.data_ptr()),
          static_cast<const char*>(source.const_data_ptr()),
          target_ids.const_data_ptr<index_t>(),
          source_ids.const_data_ptr<index_t>(),
          pairs,
          vectors,
          target.stride(0) * element_bytes,
          source.stride(0) * element_bytes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename index_t>
void copy_dense_rows(
    at::Tensor& target,
    const at::Tensor& target_ids,
    const at::Tensor& source,
    const at::Tensor& source_ids,
    cudaStream_t stream) {
  switch (vector_bytes_for(target, source)) {
    case 16:
      launch_copy_rows<uint4, index_t>(target, target_ids, source, source_ids, stream);
      break;
    case 8:
      launch_copy_rows<uint2, index_t>(target, target_ids, source, source_ids, stream);
      break;
    case 4:
      launch_copy_rows<uint32_t, index_t>(target, target_ids, source, source_ids, stream);
      break;
    case 2:
      launch_copy_rows<uint16_t, index_t>(target, target_ids, source, source_ids, stream);
      break;
    default:
      launch_copy_rows<uint8_t, index_t>(target, target_ids, source, source_ids, stream);
  }
}

void transfer_rows_cuda(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index) {
  constexpr const char* op = "transfer_rows_";
  const c10::cuda::CUDAGuard device_guard(target.device());
  // Plain names, not structured bindings: C++17 lambdas cannot capture those.
  const RowPairs pairs = prepare_transfer_rows(target, target_index, source, source_index);
  const at::ScalarType index_type = pairs.index_type;
  const at::Tensor& target_ids = pairs.target_ids;
  const at::Tensor& source_ids = pairs.source_ids;
  check_indices_on_device(op, target_ids, target.size(0), source_ids, source.size(0));
  if (target_ids.numel() == 0 || target.size(1) == 0) {
    return;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  const bool dense_rows = target.stride(1) == 1 && source.stride(1) == 1;

  AT_DISPATCH_INDEX_TYPES(index_type, "transfer_rows_cuda", [&] {
    if (target.scalar_type() == source.scalar_type() && dense_rows) {
      copy_dense_rows<index_t>(target, target_ids, source, source_ids, stream);
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, target.scalar_type(), "transfer_rows_cuda", [&] {
          using target_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, source.scalar_type(), "transfer_rows_cuda", [&] {
                const int64_t pairs = target_ids.numel();
                const int threads = threads_for(target.size(1));
                convert_rows_kernel<target_t, scalar_t, index_t>
                    <<<grid_for(pairs, threads, target.get_device()), threads, 0, stream>>>(
                        target.data_ptr<target_t>(),
                        source.const_data_ptr<scalar_t>(),
                        target_ids.const_data_ptr<index_t>(),
                        source_ids.const_data_ptr<index_t>(),
                        pairs,
                        target.size(1),
                        target.stride(0),
                        target.stride(1),
                        source.stride(0),
                        source.stride(1));
                C10_CUDA_KERNEL_LAUNCH_CHECK();
              });
        });
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CUDA, m) {
  m.impl("transfer_rows_", &transfer_rows_cuda);
}

} // namespace vocabxfer
