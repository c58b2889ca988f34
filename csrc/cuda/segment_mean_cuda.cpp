// CUDA front of vocabxfer::segment_mean_, on the three paths of
// transfer_rows_cuda.cpp: host arguments are staged with one asynchronous
// copy and checked on the host while it runs, the kernel enqueued after the
// check (no synchronisation); device arguments are checked by the
// validation kernel (offsets, ranges, repeats, weights) before the mean
// kernel, with one synchronisation to read the verdict; arguments the caller
// already checked go straight to the mean kernel.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "cuda_front.h"

namespace vocabxfer {
namespace {

void segment_mean_cuda(at::Tensor& target, const at::Tensor& target_index,
                       const at::Tensor& source, const at::Tensor& source_index,
                       const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                       bool indices_checked) {
  const c10::cuda::CUDAGuard device_guard(target.device());
  const Segments segments =
      prepare_segment_mean(target, target_index, source, source_index, offsets, weights);
  const bool on_host = segments.ids.target_ids.is_cpu();
  if ((on_host || indices_checked) && segments.ids.target_ids.numel() == 0) {
    if (on_host && !indices_checked) {
      check_segment_mean_values(segments, target.size(0), source.size(0));
    }
    return;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  const int sms = cuda::sm_count(target);
  std::vector<at::Tensor> parts = {segments.ids.target_ids, segments.ids.source_ids,
                                   segments.offsets};
  if (segments.weights.has_value()) {
    parts.push_back(*segments.weights);
  }
  if (on_host) {
    // The copy first, the host check while it runs, the kernel after it.
    parts = cuda::stage_on_device(parts, target.device());
    if (!indices_checked) {
      check_segment_mean_values(segments, target.size(0), source.size(0));
    }
  }
  const auto target_ids = cuda::index_view(parts[0]);
  const auto source_ids = cuda::index_view(parts[1]);
  const int64_t* bounds = parts[2].const_data_ptr<int64_t>();
  const void* weight_data = parts.size() > 3 ? parts[3].const_data_ptr() : nullptr;
  const auto weight_type = parts.size() > 3 ? parts[3].scalar_type() : at::kFloat;
  if (on_host || indices_checked) {
    // Checked already: one kernel, no synchronisation (see transfer_rows_cuda.cpp).
    if (target.size(1) > 0) {
      cuda::launch_segment_mean(cuda::matrix_view(target), target_ids,
                                cuda::matrix_view(source), source_ids, bounds, weight_data,
                                nullptr, sms, stream);
    }
    return;
  }
  const cuda::DeviceValidation validation(target, stream);
  cuda::launch_validate(target_ids, target.size(0), source_ids, source.size(0), bounds,
                        weight_data, weight_type, validation.seen(), validation.status(), sms,
                        stream);
  if (target_ids.size > 0 && target.size(1) > 0) {
    cuda::launch_segment_mean(cuda::matrix_view(target), target_ids, cuda::matrix_view(source),
                              source_ids, bounds, weight_data, validation.status(), sms, stream);
  }
  if (validation.wait() != 0) {
    report_invalid_segment_mean(segments, target.size(0), source.size(0));
  }
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CUDA, m) {
  m.impl("segment_mean_", &segment_mean_cuda);
}

} // namespace vocabxfer
