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

namespace {

struct Part {
  int64_t numel;
  at::ScalarType type;
};

// One pinned buffer holding `parts`, each on a 16-byte boundary so that
// every view keeps its dtype's alignment, written by fill(addresses), then
// copied to `device` in one asynchronous copy; returns each part's device
// copy. Nothing waits: torch's host allocator keeps the pinned buffer until
// the copy has run. If fill throws, nothing is copied.
template <typename Fill>
std::vector<at::Tensor> stage_parts(const std::vector<Part>& parts, const at::Device& device,
                                    Fill&& fill) {
  constexpr int64_t kAlign = 16;
  std::vector<int64_t> starts;
  int64_t bytes = 0;
  for (const Part& part : parts) {
    starts.push_back(bytes);
    bytes += (part.numel * static_cast<int64_t>(c10::elementSize(part.type)) + kAlign - 1) /
        kAlign * kAlign;
  }
  const at::Tensor pinned =
      at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::vector<uint8_t*> addresses;
  for (const int64_t start : starts) {
    addresses.push_back(pinned.data_ptr<uint8_t>() + start);
  }
  fill(addresses);
  const at::Tensor on_device = pinned.to(device, /*non_blocking=*/true);
  std::vector<at::Tensor> staged;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t size = parts[i].numel * static_cast<int64_t>(c10::elementSize(parts[i].type));
    staged.push_back(on_device.narrow(0, starts[i], size).view(parts[i].type));
  }
  return staged;
}

} // namespace

std::vector<at::Tensor> stage_on_device(const std::vector<at::Tensor>& host,
                                        const at::Device& device) {
  std::vector<Part> parts;
  for (const auto& tensor : host) {
    parts.push_back({tensor.numel(), tensor.scalar_type()});
  }
  return stage_parts(parts, device, [&](const std::vector<uint8_t*>& addresses) {
    for (size_t i = 0; i < host.size(); ++i) {
      const at::Tensor dense = host[i].contiguous();
      std::memcpy(addresses[i], dense.const_data_ptr(), dense.numel() * dense.element_size());
    }
  });
}

std::vector<at::Tensor> stage_transfer_rows(const RowPairs& pairs, int64_t target_rows,
                                            int64_t source_rows, const at::Device& device) {
  const Part ids{pairs.target_ids.numel(), packed_index_type(target_rows, source_rows)};
  return stage_parts({ids, ids}, device, [&](const std::vector<uint8_t*>& addresses) {
    pack_transfer_rows(pairs, target_rows, source_rows, addresses[0], addresses[1]);
  });
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
