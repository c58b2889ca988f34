// What the CUDA fronts of both ops share: raw views of checked tensors for
// the launchers, and the device-side validation's scratch and read-back.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "launchers.h"

namespace vocabxfer {
namespace cuda {

MatrixView matrix_view(const at::Tensor& matrix);
IndexView index_view(const at::Tensor& index);
int sm_count(const at::Tensor& on_device);

// A status word and a bit per target row, zeroed on `stream` (one memset).
// wait() copies the status into pinned host memory and synchronises the
// stream once: a valid call costs the memset, the validation kernel, the
// op's kernel and this one synchronisation.
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
