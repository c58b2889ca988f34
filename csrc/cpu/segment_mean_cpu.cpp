// CPU kernel of vocabxfer::segment_mean_: each segment's source rows are
// scaled by their share of the segment's weight (computed in float64) and
// summed in the accumulation type (float64 for float64, float32 otherwise),
// then converted into the segment's target row. Scaling before summing keeps
// the sum a convex combination: huge weights or values cannot overflow it.
// Weights whose own sum overflows float64 (near 1e308) are divided by the
// segment's largest first; any other sum is used as it is.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../checks.h"

namespace vocabxfer {
namespace {

template <typename target_t, typename source_t, typename index_t>
void mean_rows(const at::Tensor& target, const at::Tensor& target_index,
               const at::Tensor& source, const at::Tensor& source_index,
               const at::Tensor& offsets, const c10::optional<at::Tensor>& weights) {
  // float32 sums (float64 for float64), as on CUDA; at::acc_type would pick
  // float64 for every CPU type.
  using acc_t = std::conditional_t<std::is_same_v<source_t, double>, double, float>;
  const int64_t width = target.size(1);
  const int64_t target_row_stride = target.stride(0);
  const int64_t target_col_stride = target.stride(1);
  const int64_t source_row_stride = source.stride(0);
  const int64_t source_col_stride = source.stride(1);
  target_t* target_base = static_cast<target_t*>(const_cast<void*>(target.const_data_ptr()));
  const source_t* source_base = source.const_data_ptr<source_t>();
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  const int64_t* bounds = offsets.const_data_ptr<int64_t>();
  const double* weight_data = weights.has_value() ? weights->const_data_ptr<double>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width));

  at::parallel_for(0, target_index.numel(), grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sum(static_cast<size_t>(width));
    for (int64_t s = begin; s < end; ++s) {
      double total_weight = 0;
      double largest = 0;
      for (int64_t p = bounds[s]; p < bounds[s + 1]; ++p) {
        const double weight = weight_data ? weight_data[p] : 1.0;
        total_weight += weight;
        largest = std::max(largest, weight);
      }
      double divisor = 1.0;
      if (!std::isfinite(total_weight)) {
        divisor = largest;
        total_weight = 0;
        for (int64_t p = bounds[s]; p < bounds[s + 1]; ++p) {
          total_weight += weight_data[p] / divisor;
        }
      }
      std::fill(sum.begin(), sum.end(), acc_t(0));
      for (int64_t p = bounds[s]; p < bounds[s + 1]; ++p) {
        const source_t* row = source_base + static_cast<int64_t>(source_ids[p]) * source_row_stride;
        const double weight = weight_data ? weight_data[p] / divisor : 1.0;
        const auto share = static_cast<acc_t>(weight / total_weight);
        for (int64_t j = 0; j < width; ++j) {
          sum[j] += share * static_cast<acc_t>(row[j * source_col_stride]);
        }
      }
      target_t* out = target_base + static_cast<int64_t>(target_ids[s]) * target_row_stride;
      for (int64_t j = 0; j < width; ++j) {
        out[j * target_col_stride] = c10::convert<target_t>(sum[j]);
      }
    }
  });
}

void segment_mean_cpu(at::Tensor& target, const at::Tensor& target_index,
                      const at::Tensor& source, const at::Tensor& source_index,
                      const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                      bool indices_checked) {
  const Segments segments =
      prepare_segment_mean(target, target_index, source, source_index, offsets, weights);
  if (!indices_checked) {
    check_segment_mean_values(segments, target.size(0), source.size(0));
  }
  if (segments.ids.target_ids.numel() == 0 || target.size(1) == 0) {
    return;
  }
  AT_DISPATCH_INDEX_TYPES(segments.ids.index_type, "segment_mean_cpu", [&] {
    using ids_t = index_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, target.scalar_type(), "segment_mean_cpu", [&] {
          using target_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, source.scalar_type(), "segment_mean_cpu", [&] {
                mean_rows<target_t, scalar_t, ids_t>(
                    target, segments.ids.target_ids, source, segments.ids.source_ids,
                    segments.offsets, segments.weights);
              });
        });
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CPU, m) {
  m.impl("segment_mean_", &segment_mean_cpu);
}

} // namespace vocabxfer
