// CUDA kernel of vocabxfer::segment_mean_. A block averages one segment at a
// time (grid-stride over segments): its threads first put each piece's share
// of the segment's weight (computed in float64 from float64 weights) into
// shared memory, then each
// thread sums its columns of the scaled rows in float32 (float64 for float64
// sources). Scaling before summing keeps the sum a convex combination, so
// huge weights or values cannot overflow it.
#include <c10/cuda/CUDAException.h>
#include <c10/util/TypeCast.h>

#include <type_traits>

#include "dispatch.cuh"

namespace vocabxfer {
namespace cuda {
namespace {

constexpr int kThreads = 128;
// Segments of more pieces (none in practice) compute shares on the fly.
constexpr int kSharedPieces = 256;

template <typename target_t, typename source_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads) segment_mean_kernel(
    target_t* __restrict__ target,
    const source_t* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    const int64_t* __restrict__ offsets,
    const double* __restrict__ weights,
    int64_t segments,
    int64_t width,
    int64_t target_row_stride,
    int64_t target_col_stride,
    int64_t source_row_stride,
    int64_t source_col_stride,
    const uint32_t* __restrict__ status) {
  if (status != nullptr && *status != 0) {
    return;
  }
  __shared__ acc_t shares[kSharedPieces];
  for (int64_t s = blockIdx.x; s < segments; s += gridDim.x) {
    const int64_t first = offsets[s];
    const int64_t count = offsets[s + 1] - first;
    double total = 0;
    double largest = 0;
    for (int64_t p = 0; p < count; ++p) {
      const double weight = weights ? weights[first + p] : 1.0;
      total += weight;
      largest = fmax(largest, weight);
    }
    // Weights whose sum overflows (near 1e308) are divided by the largest.
    double divisor = 1.0;
    if (!isfinite(total)) {
      divisor = largest;
      total = 0;
      for (int64_t p = 0; p < count; ++p) {
        total += weights[first + p] / divisor;
      }
    }
    const auto share_of = [&](int64_t p) {
      return static_cast<acc_t>((weights ? weights[first + p] / divisor : 1.0) / total);
    };
    const bool cached = count <= kSharedPieces;
    if (cached) {
      for (int64_t p = threadIdx.x; p < count; p += blockDim.x) {
        shares[p] = share_of(p);
      }
    }
    __syncthreads();
    target_t* out = target + static_cast<int64_t>(target_ids[s]) * target_row_stride;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      acc_t sum = 0;
      for (int64_t p = 0; p < count; ++p) {
        const source_t* row =
            source + static_cast<int64_t>(source_ids[first + p]) * source_row_stride;
        sum += (cached ? shares[p] : share_of(p)) * static_cast<acc_t>(row[j * source_col_stride]);
      }
      out[j * target_col_stride] = c10::convert<target_t>(sum);
    }
    __syncthreads();
  }
}

} // namespace

void launch_segment_mean(MatrixView target, IndexView target_ids, MatrixView source,
                         IndexView source_ids, const int64_t* offsets, const void* weights,
                         const uint32_t* status, int sm_count, cudaStream_t stream) {
  const int64_t segments = target_ids.size;
  const auto blocks = static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>(segments, int64_t{sm_count} * 16)));
  dispatch_index(target_ids, [&](auto index_tag) {
    using index_t = typename decltype(index_tag)::type;
    dispatch_float(target.dtype, [&](auto target_tag) {
      using target_t = typename decltype(target_tag)::type;
      dispatch_float(source.dtype, [&](auto source_tag) {
        using source_t = typename decltype(source_tag)::type;
        using acc_t = std::conditional_t<std::is_same_v<source_t, double>, double, float>;
        segment_mean_kernel<target_t, source_t, acc_t, index_t><<<blocks, kThreads, 0, stream>>>(
            static_cast<target_t*>(target.data), static_cast<const source_t*>(source.data),
            static_cast<const index_t*>(target_ids.data),
            static_cast<const index_t*>(source_ids.data), offsets,
            static_cast<const double*>(weights), segments, target.width, target.row_stride,
            target.col_stride, source.row_stride, source.col_stride, status);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

} // namespace cuda
} // namespace vocabxfer
