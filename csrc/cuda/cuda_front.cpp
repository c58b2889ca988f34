#include "cuda_front.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

namespace vocabxfer {
namespace cuda {

MatrixView matrix_view(const at::Tensor& matrix) {
  return {const_cast<void*>(matrix.const_data_ptr()), matrix.scalar_type(), matrix.size(0),
          matrix.size(1), matrix.stride(0), matrix.stride(1)};
}

IndexView index_view(const at::Tensor& index) {
  return {index.const_data_ptr(), index.scalar_type() == at::kLong, index.numel()};
}

int sm_count(const at::Tensor& on_device) {
  // An attribute query, answered by the driver without touching the GPU.
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount,
                                        on_device.get_device()));
  return count;
}

DeviceValidation::DeviceValidation(const at::Tensor& target, cudaStream_t stream)
    : stream_(stream) {
  const int64_t words = 1 + (target.size(0) + 31) / 32;
  scratch_ = at::empty({words}, target.options().dtype(at::kInt));
  C10_CUDA_CHECK(cudaMemsetAsync(scratch_.data_ptr(), 0, words * sizeof(uint32_t), stream_));
}

uint32_t* DeviceValidation::status() const {
  return static_cast<uint32_t*>(scratch_.data_ptr());
}

uint32_t* DeviceValidation::seen() const {
  return status() + 1;
}

uint32_t DeviceValidation::wait() const {
  const at::Tensor host =
      at::empty({1}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  C10_CUDA_CHECK(cudaMemcpyAsync(host.data_ptr(), status(), sizeof(uint32_t),
                                 cudaMemcpyDeviceToHost, stream_));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return static_cast<uint32_t>(*host.const_data_ptr<int32_t>());
}

} // namespace cuda
} // namespace vocabxfer
