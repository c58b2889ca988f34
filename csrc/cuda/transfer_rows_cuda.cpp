// CUDA front of vocabxfer::transfer_rows_. Indices on the host (the common
// case: every token map holds its own there) are packed and copied with one
// asynchronous copy, checked on the host while that copy runs, and read by
// one kernel enqueued after the check: no synchronisation.
// Indices on the device are checked by a validation kernel on the current
// stream before the copy kernel, then one synchronisation reads the verdict;
// the copy kernel writes nothing when a check failed, and the error is then
// named by the host checks. Indices the caller already checked
// (indices_checked) go straight to the copy kernel.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "cuda_front.h"

namespace vocabxfer {
namespace {

void transfer_rows_cuda(at::Tensor& target, const at::Tensor& target_index,
                        const at::Tensor& source, const at::Tensor& source_index,
                        bool indices_checked) {
  const c10::cuda::CUDAGuard device_guard(target.device());
  const RowPairs pairs = prepare_transfer_rows(target, target_index, source, source_index);
  const bool on_host = pairs.target_ids.is_cpu();
  if (pairs.target_ids.numel() == 0) {
    return;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  if (on_host) {
    if (target.size(1) == 0) {
      if (!indices_checked) {
        check_transfer_rows_values(pairs, target.size(0), source.size(0));
      }
      return;
    }
    // The ids are packed (int32 where they fit: half the bytes to copy)
    // and their asynchronous copy is enqueued first; the host checks them
    // while it runs, and only then is the kernel enqueued: a bad id raises
    // before anything is written, and a valid call costs no
    // synchronisation, as index_copy_.
    const auto ids =
        cuda::stage_transfer_rows(pairs, target.size(0), source.size(0), target.device());
    if (!indices_checked) {
      check_transfer_rows_values(pairs, target.size(0), source.size(0));
    }
    cuda::launch_transfer_rows(cuda::matrix_view(target), cuda::index_view(ids[0]),
                               cuda::matrix_view(source), cuda::index_view(ids[1]), nullptr,
                               stream);
    return;
  }
  if (indices_checked) {
    if (target.size(1) > 0) {
      cuda::launch_transfer_rows(cuda::matrix_view(target), cuda::index_view(pairs.target_ids),
                                 cuda::matrix_view(source), cuda::index_view(pairs.source_ids),
                                 nullptr, stream);
    }
    return;
  }
  const auto target_ids = cuda::index_view(pairs.target_ids);
  const auto source_ids = cuda::index_view(pairs.source_ids);
  const cuda::DeviceValidation validation(target, stream);
  cuda::launch_validate(target_ids, target.size(0), source_ids, source.size(0), nullptr,
                        nullptr, at::kFloat, validation.seen(), validation.status(),
                        cuda::sm_count(target), stream);
  if (target.size(1) > 0) {
    cuda::launch_transfer_rows(cuda::matrix_view(target), target_ids, cuda::matrix_view(source),
                               source_ids, validation.status(), stream);
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
