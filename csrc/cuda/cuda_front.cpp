#include "cuda_front.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>

#include <cstring>

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

std::vector<at::Tensor> stage_on_device(const std::vector<at::Tensor>& host,
                                        const at::Device& device) {
  // Each part starts on a 16-byte boundary, so that every view keeps its
  // dtype's alignment.
  constexpr int64_t kAlign = 16;
  std::vector<int64_t> starts;
  int64_t bytes = 0;
  for (const auto& part : host) {
    starts.push_back(bytes);
    bytes += (part.numel() * part.element_size() + kAlign - 1) / kAlign * kAlign;
  }
  const at::Tensor pinned =
      at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  for (size_t i = 0; i < host.size(); ++i) {
    const at::Tensor dense = host[i].contiguous();
    std::memcpy(pinned.data_ptr<uint8_t>() + starts[i], dense.const_data_ptr(),
                dense.numel() * dense.element_size());
  }
  const at::Tensor on_device = pinned.to(device, /*non_blocking=*/true);
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < host.size(); ++i) {
    const int64_t size = host[i].numel() * host[i].element_size();
    parts.push_back(on_device.narrow(0, starts[i], size).view(host[i].scalar_type()));
  }
  return parts;
}

std::vector<at::Tensor> stage_transfer_rows(const RowPairs& pairs, int64_t target_rows,
                                            int64_t source_rows, bool check,
                                            const at::Device& device) {
  const at::ScalarType type = packed_index_type(target_rows, source_rows);
  const int64_t bytes = pairs.target_ids.numel() * static_cast<int64_t>(c10::elementSize(type));
  const int64_t part = (bytes + 15) / 16 * 16;  // the source ids start 16-byte aligned
  const at::Tensor pinned =
      at::empty({2 * part}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  uint8_t* base = pinned.data_ptr<uint8_t>();
  pack_transfer_rows(pairs, target_rows, source_rows, check, base, base + part);
  const at::Tensor on_device = pinned.to(device, /*non_blocking=*/true);
  return {on_device.narrow(0, 0, bytes).view(type), on_device.narrow(0, part, bytes).view(type)};
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
  uint32_t verdict = 0;
  c10::cuda::memcpy_and_sync(&verdict, status(), sizeof(uint32_t), cudaMemcpyDeviceToHost,
                             stream_);
  return verdict;
}

} // namespace cuda
} // namespace vocabxfer
