// CPU kernel of vocabxfer::transfer_rows_: rows are split across threads; a
// row is one memcpy when dtypes match and rows are dense, and a converting
// loop otherwise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/TypeCast.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../checks.h"

namespace vocabxfer {
namespace {

// Enough rows per task that a thread copies at least ~64 KiB at a time.
int64_t grain_for(int64_t row_bytes) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, row_bytes));
}

// Rows sit at random addresses, where the hardware prefetcher has no stream
// to follow. Touching the first KiB of the source and target rows two pairs
// ahead starts the page walk and the prefetcher's stream early; prefetching
// whole rows measured slower for wide rows (benchmarks/bench_transfer_rows.py).
constexpr int64_t kPrefetchAhead = 2;
constexpr int64_t kPrefetchBytes = 1024;

inline void prefetch_rows(const char* source_row, char* target_row, int64_t row_bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const int64_t bytes = std::min(row_bytes, kPrefetchBytes);
  for (int64_t offset = 0; offset < bytes; offset += 64) {
    __builtin_prefetch(source_row + offset, /*rw=*/0, /*locality=*/0);
    __builtin_prefetch(target_row + offset, /*rw=*/1, /*locality=*/0);
  }
#else
  (void)source_row;
  (void)target_row;
  (void)row_bytes;
#endif
}

template <typename index_t>
void copy_dense_rows(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index) {
  const int64_t element_bytes = target.element_size();
  const int64_t row_bytes = target.size(1) * element_bytes;
  const int64_t target_row_stride = target.stride(0) * element_bytes;
  const int64_t source_row_stride = source.stride(0) * element_bytes;
  char* target_base = static_cast<char*>(target.data_ptr());
  const char* source_base = static_cast<const char*>(source.const_data_ptr());
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  at::parallel_for(
      0, target_index.numel(), grain_for(row_bytes),
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          if (i + kPrefetchAhead < end) {
            prefetch_rows(
                source_base + static_cast<int64_t>(source_ids[i + kPrefetchAhead]) * source_row_stride,
                target_base + static_cast<int64_t>(target_ids[i + kPrefetchAhead]) * target_row_stride,
                row_bytes);
          }
          std::memcpy(
              target_base + static_cast<int64_t>(target_ids[i]) * target_row_stride,
              source_base + static_cast<int64_t>(source_ids[i]) * source_row_stride,
              row_bytes);
        }
      });
}

template <typename target_t, typename source_t, typename index_t>
void convert_rows(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index) {
  const int64_t width = target.size(1);
  const int64_t target_row_stride = target.stride(0);
  const int64_t target_col_stride = target.stride(1);
  const int64_t source_row_stride = source.stride(0);
  const int64_t source_col_stride = source.stride(1);
  const bool dense = target_col_stride == 1 && source_col_stride == 1;
  target_t* target_base = target.data_ptr<target_t>();
  const source_t* source_base = source.const_data_ptr<source_t>();
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  at::parallel_for(
      0, target_index.numel(), grain_for(width * sizeof(target_t)),
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          target_t* out = target_base + static_cast<int64_t>(target_ids[i]) * target_row_stride;
          const source_t* in = source_base + static_cast<int64_t>(source_ids[i]) * source_row_stride;
          if (dense) {
            // Unit strides let the compiler vectorise the conversion.
            for (int64_t j = 0; j < width; ++j) {
              out[j] = c10::convert<target_t>(in[j]);
            }
          } else {
            for (int64_t j = 0; j < width; ++j) {
              out[j * target_col_stride] =
                  c10::convert<target_t>(in[j * source_col_stride]);
            }
          }
        }
      });
}

void transfer_rows_cpu(
    at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index) {
  constexpr const char* op = "transfer_rows_";
  // Plain names, not structured bindings: C++17 lambdas cannot capture those.
  const RowPairs pairs = prepare_transfer_rows(target, target_index, source, source_index);
  const at::ScalarType index_type = pairs.index_type;
  const at::Tensor& target_ids = pairs.target_ids;
  const at::Tensor& source_ids = pairs.source_ids;

  AT_DISPATCH_INDEX_TYPES(index_type, "transfer_rows_cpu", [&] {
    check_range_cpu<index_t>(op, "target_index", target_ids, target.size(0), "target");
    check_range_cpu<index_t>(op, "source_index", source_ids, source.size(0), "source");
    check_unique_cpu<index_t>(op, "target_index", target_ids, target.size(0));
    if (target_ids.numel() == 0 || target.size(1) == 0) {
      return;
    }
    const bool dense_rows = target.stride(1) == 1 && source.stride(1) == 1;
    if (target.scalar_type() == source.scalar_type() && dense_rows) {
      copy_dense_rows<index_t>(target, target_ids, source, source_ids);
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, target.scalar_type(), "transfer_rows_cpu", [&] {
          using target_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, source.scalar_type(), "transfer_rows_cpu", [&] {
                convert_rows<target_t, scalar_t, index_t>(
                    target, target_ids, source, source_ids);
              });
        });
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CPU, m) {
  m.impl("transfer_rows_", &transfer_rows_cpu);
}

} // namespace vocabxfer
