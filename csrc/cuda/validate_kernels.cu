// One kernel validates every index value of a call before any row is written:
// ranges, repeated target rows, and segment_mean_'s offsets and weights. It
// sets bits of a status word instead of trapping, so a bad index is reported
// as an exception and the CUDA context stays usable.
#include <c10/cuda/CUDAException.h>

#include "dispatch.cuh"

namespace vocabxfer {
namespace cuda {
namespace {

template <typename index_t, typename weight_t>
__global__ void validate_kernel(
    const index_t* __restrict__ target_ids,
    int64_t targets,
    int64_t target_rows,
    const index_t* __restrict__ source_ids,
    int64_t sources,
    int64_t source_rows,
    const int64_t* __restrict__ offsets,
    const weight_t* __restrict__ weights,
    uint32_t* __restrict__ seen,
    uint32_t* __restrict__ status) {
  uint32_t bad = 0;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t count = targets > sources ? targets : sources;
  for (int64_t i = first; i < count; i += step) {
    if (i < targets) {
      const int64_t row = static_cast<int64_t>(target_ids[i]);
      if (row < 0 || row >= target_rows) {
        bad |= kBadTargetIndex;
      } else {
        const uint32_t bit = 1u << (row & 31);
        if (atomicOr(seen + (row >> 5), bit) & bit) {
          bad |= kRepeatedTargetRow;
        }
      }
      if (offsets != nullptr && offsets[i + 1] <= offsets[i]) {
        bad |= kBadOffsets;
      }
    }
    if (i < sources) {
      const int64_t row = static_cast<int64_t>(source_ids[i]);
      if (row < 0 || row >= source_rows) {
        bad |= kBadSourceIndex;
      }
      if (weights != nullptr) {
        const weight_t weight = weights[i];
        if (!(isfinite(weight) && weight > 0)) {
          bad |= kBadWeight;
        }
      }
    }
  }
  if (offsets != nullptr && first == 0 && (offsets[0] != 0 || offsets[targets] != sources)) {
    bad |= kBadOffsets;
  }
  if (bad != 0) {
    atomicOr(status, bad);
  }
}

} // namespace

void launch_validate(IndexView target_ids, int64_t target_rows, IndexView source_ids,
                     int64_t source_rows, const int64_t* offsets, const void* weights,
                     c10::ScalarType weight_type, uint32_t* seen, uint32_t* status,
                     int sm_count, cudaStream_t stream) {
  const int64_t count = std::max(target_ids.size, source_ids.size);
  const int64_t needed = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const auto blocks = static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{sm_count} * 8)));
  dispatch_index(target_ids, [&](auto index_tag) {
    using index_t = typename decltype(index_tag)::type;
    const auto launch = [&](auto weight_tag) {
      using weight_t = typename decltype(weight_tag)::type;
      validate_kernel<index_t, weight_t><<<blocks, kThreadsPerBlock, 0, stream>>>(
          static_cast<const index_t*>(target_ids.data), target_ids.size, target_rows,
          static_cast<const index_t*>(source_ids.data), source_ids.size, source_rows, offsets,
          static_cast<const weight_t*>(weights), seen, status);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (weight_type == c10::ScalarType::Double) {
      launch(TypeTag<double>{});
    } else {
      launch(TypeTag<float>{});
    }
  });
}

} // namespace cuda
} // namespace vocabxfer
