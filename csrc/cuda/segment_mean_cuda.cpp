// CUDA front of vocabxfer::segment_mean_: host checks, then the validation
// kernel (offsets, ranges, repeats, weights) and the mean kernel on the
// current stream, then one synchronisation that reads the verdict.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "cuda_front.h"

namespace vocabxfer {
namespace {

void segment_mean_cuda(at::Tensor& target, const at::Tensor& target_index,
                       const at::Tensor& source, const at::Tensor& source_index,
                       const at::Tensor& offsets, const c10::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard device_guard(target.device());
  const Segments segments =
      prepare_segment_mean(target, target_index, source, source_index, offsets, weights);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  const int sms = cuda::sm_count(target);
  const auto target_ids = cuda::index_view(segments.ids.target_ids);
  const auto source_ids = cuda::index_view(segments.ids.source_ids);
  const void* weight_data =
      segments.weights.has_value() ? segments.weights->const_data_ptr() : nullptr;
  const auto weight_type =
      segments.weights.has_value() ? segments.weights->scalar_type() : at::kFloat;
  const int64_t* bounds = segments.offsets.const_data_ptr<int64_t>();
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
