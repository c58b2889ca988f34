// CPU kernel of vocabxfer::transfer_rows_. Rows are split across threads.
// Same dtype: a row is one memcpy (dense rows) or an element-wise copy
// (strided rows). Different dtypes: rows are gathered into a small buffer,
// converted by ATen's own copy (the code Tensor.to runs, vectorised for this
// CPU, with its rounding and NaN payload rules) and scattered into place.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
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

// A matrix's rows as bytes: where row r starts, and the step between the
// elements of a row.
struct RowLayout {
  char* base;
  int64_t row_stride_bytes;
  int64_t element_stride_bytes;
  int64_t element_bytes;

  explicit RowLayout(const at::Tensor& matrix)
      : base(static_cast<char*>(const_cast<void*>(matrix.const_data_ptr()))),
        row_stride_bytes(matrix.stride(0) * matrix.element_size()),
        element_stride_bytes(matrix.stride(1) * matrix.element_size()),
        element_bytes(matrix.element_size()) {}

  char* row(int64_t r) const { return base + r * row_stride_bytes; }
  bool dense() const { return element_stride_bytes == element_bytes; }
};

// Copies `width` elements of `element_bytes` between two strided rows; a
// bit-exact copy, so a NaN keeps its payload.
template <typename bits_t>
void copy_strided(char* out, int64_t out_step, const char* in, int64_t in_step, int64_t width) {
  for (int64_t j = 0; j < width; ++j) {
    bits_t value;
    std::memcpy(&value, in + j * in_step, sizeof(bits_t));
    std::memcpy(out + j * out_step, &value, sizeof(bits_t));
  }
}

void copy_row(char* out, const RowLayout& out_layout, const char* in, const RowLayout& in_layout,
              int64_t width) {
  if (out_layout.dense() && in_layout.dense()) {
    std::memcpy(out, in, width * out_layout.element_bytes);
    return;
  }
  const int64_t out_step = out_layout.element_stride_bytes;
  const int64_t in_step = in_layout.element_stride_bytes;
  switch (out_layout.element_bytes) {
    case 8: copy_strided<uint64_t>(out, out_step, in, in_step, width); break;
    case 4: copy_strided<uint32_t>(out, out_step, in, in_step, width); break;
    default: copy_strided<uint16_t>(out, out_step, in, in_step, width); break;
  }
}

template <typename index_t>
void copy_same_dtype(const at::Tensor& target, const at::Tensor& target_index,
                     const at::Tensor& source, const at::Tensor& source_index) {
  const RowLayout out_layout(target);
  const RowLayout in_layout(source);
  const int64_t width = target.size(1);
  const int64_t row_bytes = width * target.element_size();
  const bool dense = out_layout.dense() && in_layout.dense();
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  at::parallel_for(0, target_index.numel(), grain_for(row_bytes), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (dense && i + kPrefetchAhead < end) {
        prefetch_rows(in_layout.row(source_ids[i + kPrefetchAhead]),
                      out_layout.row(target_ids[i + kPrefetchAhead]), row_bytes);
      }
      copy_row(out_layout.row(target_ids[i]), out_layout, in_layout.row(source_ids[i]),
               in_layout, width);
    }
  });
}

// Source bytes a thread gathers before each conversion: large enough that
// ATen's per-call cost (about 2 us) is small, small enough to stay in L2.
constexpr int64_t kConvertChunkBytes = 256 * 1024;

template <typename index_t>
void copy_converting(const at::Tensor& target, const at::Tensor& target_index,
                     const at::Tensor& source, const at::Tensor& source_index) {
  const RowLayout out_layout(target);
  const RowLayout in_layout(source);
  const int64_t width = target.size(1);
  const int64_t rows_per_chunk = std::max<int64_t>(
      1, kConvertChunkBytes / (width * source.element_size()));
  const int64_t pairs = target_index.numel();
  const int64_t chunks = (pairs + rows_per_chunk - 1) / rows_per_chunk;
  const index_t* target_ids = target_index.const_data_ptr<index_t>();
  const index_t* source_ids = source_index.const_data_ptr<index_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t first_chunk, int64_t end_chunk) {
    // Dense buffers of this thread; inside parallel_for, ATen's copy runs
    // on this thread alone.
    at::Tensor gathered = at::empty({rows_per_chunk, width}, source.options());
    at::Tensor converted = at::empty({rows_per_chunk, width}, target.options());
    const RowLayout gathered_layout(gathered);
    const RowLayout converted_layout(converted);
    for (int64_t chunk = first_chunk; chunk < end_chunk; ++chunk) {
      const int64_t first = chunk * rows_per_chunk;
      const int64_t rows = std::min(rows_per_chunk, pairs - first);
      for (int64_t k = 0; k < rows; ++k) {
        copy_row(gathered_layout.row(k), gathered_layout, in_layout.row(source_ids[first + k]),
                 in_layout, width);
      }
      converted.narrow(0, 0, rows).copy_(gathered.narrow(0, 0, rows));
      for (int64_t k = 0; k < rows; ++k) {
        copy_row(out_layout.row(target_ids[first + k]), out_layout, converted_layout.row(k),
                 converted_layout, width);
      }
    }
  });
}

void transfer_rows_cpu(at::Tensor& target, const at::Tensor& target_index,
                       const at::Tensor& source, const at::Tensor& source_index,
                       bool indices_checked) {
  const RowPairs pairs = prepare_transfer_rows(target, target_index, source, source_index);
  if (!indices_checked) {
    check_transfer_rows_values(pairs, target.size(0), source.size(0));
  }
  if (pairs.target_ids.numel() == 0 || target.size(1) == 0) {
    return;
  }
  AT_DISPATCH_INDEX_TYPES(pairs.index_type, "transfer_rows_cpu", [&] {
    if (target.scalar_type() == source.scalar_type()) {
      copy_same_dtype<index_t>(target, pairs.target_ids, source, pairs.source_ids);
    } else {
      copy_converting<index_t>(target, pairs.target_ids, source, pairs.source_ids);
    }
  });
}

} // namespace

TORCH_LIBRARY_IMPL(vocabxfer, CPU, m) {
  m.impl("transfer_rows_", &transfer_rows_cpu);
}

} // namespace vocabxfer
