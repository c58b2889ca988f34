// CUDA kernel of vocabxfer::segment_mean_. A block averages one segment at a
// time (grid-stride over segments); each thread owns columns of the row and
// accumulates them in float32 (float64 for float64 sources).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../checks.h"

namespace vocabxfer {
namespace {

constexpr const char* kOp = "segment_mean_";
constexpr int kThreads = 128;

template <typename target_t, typename source_t, typename acc_t, typename index_t>
__global__ void segment_mean_kernel(
    target_t* __restrict__ target,
    const source_t* __restrict__ source,
    const index_t* __restrict__ target_ids,
    const index_t* __restrict__ source_ids,
    const int64_t* __restrict__ offsets,
    const acc_t* __restrict__ weights,
    int64_t segments,
    int64_t width,
    int64_t target_row_stride,
    int64_t target_col_stride,
    int64_t source_row_stride,
    int64_t source_col_stride) {
  for (int64_t s = blockIdx.x; s < segments; s += gridDim.x) {
    const int64_t first = offsets[s];
    const int64_t last = offsets[s + 1];
    target_t* out = target + static_cast<int64_t>(target_ids[s]) * target_row_stride;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      acc_t sum = 0;
      acc_t total_weight = 0;
      for (int64_t p = first; p < last; ++p) {
        const acc_t w = weights ? weights[p] : acc_t(1);
        const source_t* row = source + static_cast<int64_t>(source_ids[p]) * source_row_stride;
        sum += w * static_cast<acc_t>(row[j * source_col_stride]);
        total_weight += w;
      }
      out[j * target_col_stride] = c10::convert<target_t>(sum / total_weight);
    }
  }
}

at::Tensor as_long(const at::Tensor& scalar) {
  return scalar.to(at::kLong).reshape({1});
}

// Offsets, both index ranges, target uniqueness and weights, validated with
// reductions and a single device-to-host copy when everything is valid; the
// error paths synchronise again to name the culprit.
void check_values_on_device(
    const at::Tensor& target_ids,
    int64_t target_rows,
    const at::Tensor& source_ids,
    int64_t source_rows,
    const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights) {
  const int64_t segments = target_ids.numel();
  const int64_t pieces = source_ids.numel();
  if (segments == 0) {
    const int64_t only = offsets[0].item<int64_t>();
    TORCH_CHECK_VALUE(only == 0, kOp, ": offsets[0] = ", only, " but must be 0");
    TORCH_CHECK_VALUE(
        pieces == 0, kOp, ": there are no segments but source_index has ",
        pieces, " entries");
    return;
  }
  if (target_rows == 0) {
    report_out_of_range(kOp, "target_index", target_ids, target_rows, "target");
  }
  const auto steps = offsets.slice(0, 1) - offsets.slice(0, 0, segments);
  // Clamped so that counting never indexes out of bounds; a clamped value
  // only matters when the range check fails, which is reported first.
  auto counts = at::zeros({target_rows}, target_ids.options().dtype(at::kInt));
  counts.index_add_(0, target_ids.clamp(0, target_rows - 1),
                    at::ones({segments}, counts.options()));
  const auto no_pieces = at::zeros({1}, offsets.options());
  const auto weight_ok = weights.has_value()
      ? as_long(at::logical_and(at::isfinite(*weights), *weights > 0).all())
      : at::ones({1}, offsets.options());
  const auto stats =
      at::cat({as_long(offsets[0]), as_long(offsets[segments]), as_long(steps.min()),
               as_long(target_ids.min()), as_long(target_ids.max()),
               as_long(counts.max()),
               pieces > 0 ? as_long(source_ids.min()) : no_pieces,
               pieces > 0 ? as_long(source_ids.max()) : no_pieces, weight_ok})
          .cpu();
  const int64_t* s = stats.const_data_ptr<int64_t>();
  TORCH_CHECK_VALUE(s[0] == 0, kOp, ": offsets[0] = ", s[0], " but must be 0");
  TORCH_CHECK_VALUE(
      s[1] == pieces, kOp, ": offsets[", segments, "] = ", s[1],
      " but must equal the length of source_index (", pieces, ")");
  if (s[2] <= 0) {
    const int64_t bad = (steps <= 0).nonzero()[0][0].item<int64_t>();
    TORCH_CHECK_VALUE(
        false, kOp, ": segment ", bad, " is empty or reversed (offsets[", bad,
        "] = ", offsets[bad].item<int64_t>(), ", offsets[", bad + 1, "] = ",
        offsets[bad + 1].item<int64_t>(),
        "); every segment needs at least one source row");
  }
  if (s[3] < 0 || s[4] >= target_rows) {
    report_out_of_range(kOp, "target_index", target_ids, target_rows, "target");
  }
  if (s[5] > 1) {
    report_duplicate(kOp, "target_index", target_ids, counts);
  }
  if (s[6] < 0 || s[7] >= source_rows) {
    report_out_of_range(kOp, "source_index", source_ids, source_rows, "source");
  }
  if (s[8] == 0) {
    const auto& w = *weights;
    const int64_t bad =
        at::logical_not(at::logical_and(at::isfinite(w), w > 0)).nonzero()[0][0].item<int64_t>();
    TORCH_CHECK_VALUE(
        false, kOp, ": weights[", bad, "] = ", w[bad].item<double>(),
        " but weights must be finite and greater than 0");
  }
}

void segment_mean_cuda(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index,
    const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard device_guard(target.device());
  const auto inputs =
      prepare_segment_mean(target, target_index, source, source_index, offsets, weights);
  // Plain names, not structured bindings: C++17 lambdas cannot capture those.
  const at::ScalarType index_type = inputs.ids.index_type;
  const at::Tensor& target_ids = inputs.ids.target_ids;
  const at::Tensor& source_ids = inputs.ids.source_ids;
  const auto& bounds = inputs.offsets;
  const auto& acc_weights = inputs.weights;
  check_values_on_device(target_ids, target.size(0), source_ids, source.size(0),
                         bounds, acc_weights);
  const int64_t segments = target_ids.numel();
  if (segments == 0 || target.size(1) == 0) {
    return;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(target.get_device()).stream();
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        target.get_device()));
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(segments, int64_t{sms} * 16));

  AT_DISPATCH_INDEX_TYPES(index_type, "segment_mean_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, target.scalar_type(), "segment_mean_cuda", [&] {
          using target_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, source.scalar_type(), "segment_mean_cuda", [&] {
                using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
                segment_mean_kernel<target_t, scalar_t, acc_t, index_t>
                    <<<blocks, kThreads, 0, stream>>>(
                        target.data_ptr<target_t>(),
                        source.const_data_ptr<scalar_t>(),
                        target_ids.const_data_ptr<index_t>(),
                        source_ids.const_data_ptr<index_t>(),
                        bounds.const_data_ptr<int64_t>(),
                        acc_weights.has_value() ? acc_weights->const_data_ptr<acc_t>() : nullptr,
                        segments,
                        target.size(1),
                        target.stride(0),
                        target.stride(1),
                        source.stride(0),
                        source.stride(1));
                C10_CUDA_KERNEL_LAUNCH_CHECK();
              });
        });
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CUDA, m) {
  m.impl("segment_mean_", &segment_mean_cuda);
}

} // namespace vocabxfer
