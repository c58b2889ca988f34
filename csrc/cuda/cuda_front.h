// What the CUDA fronts of both ops share: raw views of checked tensors for
// the launchers, and the device-side validation's scratch and read-back.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "../checks.h"
#include "launchers.h"

namespace vocabxfer {
namespace cuda {

MatrixView matrix_view(const at::Tensor& matrix);
IndexView index_view(const at::Tensor& index);
int sm_count(const at::Tensor& on_device);

// Host tensors (checked on the host) copied to `device` with one
// asynchronous copy from pinned memory, packed into one buffer; returns the
// device copies, in order. Nothing waits: torch's host allocator keeps the
// pinned buffer until the copy has run, and the device buffer is freed in
// stream order.
std::vector<at::Tensor> stage_on_device(const std::vector<at::Tensor>& host,
                                        const at::Device& device);

// transfer_rows_'s host indices on their way to `device`: packs both, as
// packed_index_type, into one pinned buffer, which one asynchronous copy
// takes to the device; checks nothing (the caller checks the values while
// the copy runs, before any kernel reads them). Returns the device's target
// and source ids.
std::vector<at::Tensor> stage_transfer_rows(const RowPairs& pairs, int64_t target_rows,
                                            int64_t source_rows, const at::Device& device);

// A status word and a bit per target row, zeroed on `stream` (one memset).
// wait() copies the status to the host and synchronises the stream once: a
// valid call costs the memset, the validation kernel, the op's kernel and
// this one synchronisation (torch's sync debug mode does not see it, made
// as it is inside the extension; the profiler does).
class DeviceValidation {
 public:
  DeviceValidation(const at::Tensor& target, cudaStream_t stream);
  uint32_t* status() const;
  uint32_t* seen() const;
  uint32_t wait() const;

 private:
  at::Tensor scratch_;
  cudaStream_t stream_;
};

} // namespace cuda
} // namespace vocabxfer
