// The CUDA kernels' launchers, in plain types: the host fronts
// (transfer_rows_cuda.cpp, segment_mean_cuda.cpp) check arguments with ATen
// and pass raw views here, so the .cu files need no ATen headers.
#pragma once

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace vocabxfer {
namespace cuda {

// A 2-D matrix as a kernel sees it; strides are in elements.
struct MatrixView {
  void* data;
  c10::ScalarType dtype;
  int64_t rows;
  int64_t width;
  int64_t row_stride;
  int64_t col_stride;
};

// A dense 1-D index of int32 or int64.
struct IndexView {
  const void* data;
  bool is_int64;
  int64_t size;
};

// Bits of the validation status word; 0 means every check passed.
enum StatusBits : uint32_t {
  kBadTargetIndex = 1u << 0,
  kBadSourceIndex = 1u << 1,
  kRepeatedTargetRow = 1u << 2,
  kBadOffsets = 1u << 3,
  kBadWeight = 1u << 4,
};

// One pass over the index values: both ranges, each target row at most once
// (a bit per target row in `seen`, zeroed by the caller), and, for
// segment_mean_, the offsets and weights. Sets bits of *status; never traps.
// `offsets` (segments + 1 entries) and `weights` (one per source id, float32
// or float64 as `weight_type`) may be null.
void launch_validate(IndexView target_ids, int64_t target_rows, IndexView source_ids,
                     int64_t source_rows, const int64_t* offsets, const void* weights,
                     c10::ScalarType weight_type, uint32_t* seen, uint32_t* status,
                     int sm_count, cudaStream_t stream);

// target[target_ids[i]] = source[source_ids[i]], converting dtype as
// Tensor.to does on the GPU. Does nothing if *status is not 0; a null
// status means the indices were checked before the launch.
void launch_transfer_rows(MatrixView target, IndexView target_ids, MatrixView source,
                          IndexView source_ids, const uint32_t* status, cudaStream_t stream);

// target[target_ids[s]] = weighted mean of source[source_ids[offsets[s]:offsets[s+1]]].
// `weights` is null or one float64 weight per source id. Does nothing if *status is not 0 (null:
// checked before the launch).
void launch_segment_mean(MatrixView target, IndexView target_ids, MatrixView source,
                         IndexView source_ids, const int64_t* offsets, const void* weights,
                         const uint32_t* status, int sm_count, cudaStream_t stream);

} // namespace cuda
} // namespace vocabxfer
