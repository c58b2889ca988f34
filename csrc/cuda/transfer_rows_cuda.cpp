// CUDA front of vocabxfer::transfer_rows_: host checks, then the validation
// kernel and the copy kernel on the current stream, then one synchronisation
// that reads the validation's verdict. The copy kernel writes nothing when a
// check failed, and the error is then named by the host checks.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "cuda_front.h"

namespace vocabxfer {
namespace {

void transfer_rows_cuda(at::Tensor& target, const at::Tensor& target_index,
                        const at::Tensor& source, const at::Tensor& source_index) {
  const c10::cuda::CUDAGuard device_guard(target.device());
  const RowPairs pairs = prepare_transfer_rows(target, target_index, source, source_index);
  if (pairs.target_ids.numel() == 0) {
    return;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  const int sms = cuda::sm_count(target);
  const auto target_ids = cuda::index_view(pairs.target_ids);
  const auto source_ids = cuda::index_view(pairs.source_ids);
  const cuda::DeviceValidation validation(target, stream);
  cuda::launch_validate(target_ids, target.size(0), source_ids, source.size(0), nullptr,
                        nullptr, at::kFloat, validation.seen(), validation.status(), sms,
                        stream);
  if (target.size(1) > 0) {
    cuda::launch_transfer_rows(cuda::matrix_view(target), target_ids, cuda::matrix_view(source),
                               source_ids, validation.status(), sms, stream);
  }
  if (validation.wait() != 0) {
    report_invalid_transfer_rows(pairs, target.size(0), source.size(0));
  }
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CUDA, m) {
  m.impl("transfer_rows_", &transfer_rows_cuda);
}

} // namespace vocabxfer
