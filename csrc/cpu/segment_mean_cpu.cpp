// CPU kernel of vocabxfer::segment_mean_: each segment's source rows are
// summed in the accumulation type (float64 for float64, float32 otherwise),
// divided by the segment's count or weight, and converted into its target row.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "../checks.h"

namespace vocabxfer {
namespace {

constexpr const char* kOp = "segment_mean_";

// offsets must start at 0, end at the number of pieces and grow strictly:
// an empty segment has no mean.
void check_offsets_cpu(const at::Tensor& offsets, int64_t pieces) {
  const int64_t* data = offsets.const_data_ptr<int64_t>();
  const int64_t segments = offsets.numel() - 1;
  TORCH_CHECK_VALUE(
      data[0] == 0, kOp, ": offsets[0] = ", data[0], " but must be 0");
  TORCH_CHECK_VALUE(
      data[segments] == pieces,
      kOp, ": offsets[", segments, "] = ", data[segments],
      " but must equal the length of source_index (", pieces, ")");
  for (int64_t s = 0; s < segments; ++s) {
    TORCH_CHECK_VALUE(
        data[s + 1] > data[s],
        kOp, ": segment ", s, " is empty or reversed (offsets[", s, "] = ",
        data[s], ", offsets[", s + 1, "] = ", data[s + 1],
        "); every segment needs at least one source row");
  }
}

template <typename acc_t>
void check_weights_cpu(const at::Tensor& weights) {
  const acc_t* data = weights.const_data_ptr<acc_t>();
  for (int64_t i = 0; i < weights.numel(); ++i) {
    TORCH_CHECK_VALUE(
        std::isfinite(data[i]) && data[i] > 0,
        kOp, ": weights[", i, "] = ", data[i],
        " but weights must be finite and greater than 0");
  }
}

template <typename target_t, typename source_t, typename index_t>
void mean_rows(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index,
    const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights) {
  // float32 sums (float64 for float64), as on CUDA; at::acc_type would pick
  // float64 for every CPU type.
  using acc_t = std::conditional_t<std::is_same_v<source_t, double>, double, float>;
  const int64_t width = target.size(1);
  const int64_t target_row_stride = target.stride(0);
  const int64_t target_col_stride = target.stride(1);
  const int64_t source_row_stride = source.stride(0);
  const int64_t source_col_stride = source.stride(1);
  target_t* target_base = target.data_ptr<target_t>();
  const source_t* source_base = source.const_data_ptr<source_t>();
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  const int64_t* bounds = offsets.const_data_ptr<int64_t>();
  const acc_t* weight_data =
      weights.has_value() ? weights->const_data_ptr<acc_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width));

  at::parallel_for(0, target_index.numel(), grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(static_cast<size_t>(width));
    for (int64_t s = begin; s < end; ++s) {
      std::fill(sum.begin(), sum.end(), acc_t(0));
      acc_t total_weight = 0;
      for (int64_t p = bounds[s]; p < bounds[s + 1]; ++p) {
        const source_t* row = source_base + static_cast<int64_t>(source_ids[p]) * source_row_stride;
        const acc_t w = weight_data ? weight_data[p] : acc_t(1);
        total_weight += w;
        for (int64_t j = 0; j < width; ++j) {
          sum[j] += w * static_cast<acc_t>(row[j * source_col_stride]);
        }
      }
      target_t* out = target_base + static_cast<int64_t>(target_ids[s]) * target_row_stride;
      for (int64_t j = 0; j < width; ++j) {
        out[j * target_col_stride] = c10::convert<target_t>(sum[j] / total_weight);
      }
    }
  });
}

void segment_mean_cpu(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index,
    const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights) {
  const auto inputs =
      prepare_segment_mean(target, target_index, source, source_index, offsets, weights);
  // Plain names, not structured bindings: C++17 lambdas cannot capture those.
  const at::ScalarType index_type = inputs.ids.index_type;
  const at::Tensor& target_ids = inputs.ids.target_ids;
  const at::Tensor& source_ids = inputs.ids.source_ids;
  const auto& bounds = inputs.offsets;
  const auto& acc_weights = inputs.weights;
  const bool double_sums = source.scalar_type() == at::kDouble;

  AT_DISPATCH_INDEX_TYPES(index_type, "segment_mean_cpu", [&] {
    check_offsets_cpu(bounds, source_ids.numel());
    check_range_cpu<index_t>(kOp, "target_index", target_ids, target.size(0), "target");
    check_unique_cpu<index_t>(kOp, "target_index", target_ids, target.size(0));
    check_range_cpu<index_t>(kOp, "source_index", source_ids, source.size(0), "source");
    if (acc_weights.has_value()) {
      if (double_sums) {
        check_weights_cpu<double>(*acc_weights);
      } else {
        check_weights_cpu<float>(*acc_weights);
      }
    }
    if (target_ids.numel() == 0 || target.size(1) == 0) {
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, target.scalar_type(), "segment_mean_cpu", [&] {
          using target_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, source.scalar_type(), "segment_mean_cpu", [&] {
                mean_rows<target_t, scalar_t, index_t>(
                    target, target_ids, source, source_ids, bounds, acc_weights);
              });
        });
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CPU, m) {
  m.impl("segment_mean_", &segment_mean_cpu);
}

} // namespace vocabxfer
