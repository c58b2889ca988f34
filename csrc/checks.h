// Argument checks shared by every device kernel of every vocabxfer op.
// Every message names the op, the argument and what was expected, and every
// check runs before the first row is written.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <cstdint>
#include <vector>

namespace vocabxfer {

inline bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf ||
      dtype == at::kBFloat16;
}

// A 2-D matrix of float64, float32, float16 or bfloat16 rows.
inline void check_matrix(
    const char* op,
    const char* name,
    const at::Tensor& matrix) {
  TORCH_CHECK_TYPE(
      is_supported_float(matrix.scalar_type()),
      op, ": ", name, " must be float64, float32, float16 or bfloat16, got ",
      matrix.scalar_type());
  TORCH_CHECK_VALUE(
      matrix.dim() == 2,
      op, ": ", name, " must be 2-D (rows x width), got ", matrix.dim(),
      "-D with shape ", matrix.sizes());
}

// A 1-D int32 or int64 index on the same device as the target.
inline void check_index(
    const char* op,
    const char* name,
    const at::Tensor& index,
    const at::Tensor& target) {
  TORCH_CHECK_TYPE(
      index.scalar_type() == at::kLong || index.scalar_type() == at::kInt,
      op, ": ", name, " must be int64 or int32, got ", index.scalar_type());
  TORCH_CHECK_VALUE(
      index.dim() == 1,
      op, ": ", name, " must be 1-D, got ", index.dim(), "-D with shape ",
      index.sizes());
  TORCH_CHECK_VALUE(
      index.device() == target.device(),
      op, ": ", name, " is on ", index.device(), " but target is on ",
      target.device(), "; all tensors must be on one device");
}

inline void check_same_device(
    const char* op,
    const char* name,
    const at::Tensor& tensor,
    const at::Tensor& target) {
  TORCH_CHECK_VALUE(
      tensor.device() == target.device(),
      op, ": ", name, " is on ", tensor.device(), " but target is on ",
      target.device(), "; all tensors must be on one device");
}

// The target is written in place: two of its elements must not share memory,
// and no input may share memory with it (its rows could change while read).
inline void check_no_overlap(
    const char* op,
    const at::Tensor& target,
    const at::Tensor& source) {
  TORCH_CHECK_VALUE(
      at::has_internal_overlap(target) != at::MemOverlap::Yes,
      op, ": target has elements that share memory (an expanded or stride-0 "
      "view); pass a tensor whose elements are distinct, e.g. target.clone()");
  const auto status = at::get_overlap_status(target, source);
  const bool may_overlap = status == at::MemOverlapStatus::Full ||
      status == at::MemOverlapStatus::Partial ||
      (status == at::MemOverlapStatus::TooHard &&
       target.storage().is_alias_of(source.storage()));
  TORCH_CHECK_VALUE(
      !may_overlap,
      op, ": target and source share memory, so rows could be overwritten "
      "before they are read; pass source.clone() instead");
}

// An index as a contiguous tensor of one integer type, so that kernels only
// ever see int32 or int64 laid out densely.
inline at::Tensor as_contiguous_index(const at::Tensor& index,
                                      at::ScalarType dtype) {
  return index.to(dtype).contiguous();
}

inline at::ScalarType common_index_type(const at::Tensor& first,
                                        const at::Tensor& second) {
  return first.scalar_type() == second.scalar_type() ? first.scalar_type()
                                                     : at::kLong;
}

// ---- CPU: one pass per index, position and value named in the message ----

template <typename index_t>
void check_range_cpu(
    const char* op,
    const char* name,
    const at::Tensor& index,
    int64_t rows,
    const char* rows_of) {
  const index_t* data = index.const_data_ptr<index_t>();
  const int64_t n = index.numel();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t value = static_cast<int64_t>(data[i]);
    TORCH_CHECK_INDEX(
        value >= 0 && value < rows,
        op, ": ", name, "[", i, "] = ", value, " is out of range for ",
        rows_of, " with ", rows, " rows");
  }
}

// Requires the range check to have passed.
template <typename index_t>
void check_unique_cpu(const char* op, const char* name,
                      const at::Tensor& index, int64_t rows) {
  const index_t* data = index.const_data_ptr<index_t>();
  const int64_t n = index.numel();
  std::vector<int64_t> first_seen(static_cast<size_t>(rows), -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t value = static_cast<int64_t>(data[i]);
    TORCH_CHECK_VALUE(
        first_seen[value] < 0,
        op, ": ", name, " holds row ", value, " twice (positions ",
        first_seen[value], " and ", i, "); each target row may be written "
        "once, so the token map has a duplicate");
    first_seen[value] = i;
  }
}

// ---- any device: reductions, then one synchronisation ----------------------
// Used by the CUDA kernels so that a bad index is reported as an error
// instead of tripping a device-side assert that would poison the context.

// Error path only: finds the first position that is out of range.
inline void report_out_of_range(
    const char* op,
    const char* name,
    const at::Tensor& index,
    int64_t rows,
    const char* rows_of) {
  const auto bad = at::logical_or(index < 0, index >= rows).nonzero();
  if (bad.size(0) == 0) {
    return;
  }
  const int64_t position = bad[0][0].item<int64_t>();
  const int64_t value = index[position].item<int64_t>();
  TORCH_CHECK_INDEX(
      false, op, ": ", name, "[", position, "] = ", value,
      " is out of range for ", rows_of, " with ", rows, " rows");
}

// Error path only: names a row that the index holds twice.
inline void report_duplicate(
    const char* op,
    const char* name,
    const at::Tensor& index,
    const at::Tensor& counts) {
  const int64_t value = (counts > 1).nonzero()[0][0].item<int64_t>();
  const auto positions = (index == value).nonzero().cpu();
  TORCH_CHECK_VALUE(
      false, op, ": ", name, " holds row ", value, " twice (positions ",
      positions[0][0].item<int64_t>(), " and ",
      positions[1][0].item<int64_t>(),
      "); each target row may be written once, so the token map has a "
      "duplicate");
}

// Range of both indices and uniqueness of the target index, with a single
// device-to-host copy when everything is valid.
inline void check_indices_on_device(
    const char* op,
    const at::Tensor& target_index,
    int64_t target_rows,
    const at::Tensor& source_index,
    int64_t source_rows) {
  if (target_index.numel() == 0 && source_index.numel() == 0) {
    return;
  }
  if (target_rows == 0 || source_rows == 0) {
    report_out_of_range(op, "target_index", target_index, target_rows,
                        "target");
    report_out_of_range(op, "source_index", source_index, source_rows,
                        "source");
  }
  // Clamped so that counting never indexes out of bounds; a clamped value
  // only matters when the range check fails, which is reported first.
  auto counts = at::zeros({target_rows}, target_index.options().dtype(at::kInt));
  counts.index_add_(
      0, target_index.clamp(0, target_rows - 1),
      at::ones({target_index.numel()}, counts.options()));
  const auto stats = at::stack({target_index.min().to(at::kLong),
                                target_index.max().to(at::kLong),
                                source_index.min().to(at::kLong),
                                source_index.max().to(at::kLong),
                                counts.max().to(at::kLong)})
                         .cpu();
  const int64_t* s = stats.const_data_ptr<int64_t>();
  if (s[0] < 0 || s[1] >= target_rows) {
    report_out_of_range(op, "target_index", target_index, target_rows,
                        "target");
  }
  if (s[2] < 0 || s[3] >= source_rows) {
    report_out_of_range(op, "source_index", source_index, source_rows,
                        "source");
  }
  if (s[4] > 1) {
    report_duplicate(op, "target_index", target_index, counts);
  }
}

} // namespace vocabxfer

namespace vocabxfer {

// Both indices as contiguous tensors of one integer type.
struct RowPairs {
  at::ScalarType index_type;
  at::Tensor target_ids;
  at::Tensor source_ids;
};

inline RowPairs as_row_pairs(const at::Tensor& target_index,
                             const at::Tensor& source_index) {
  const auto index_type = common_index_type(target_index, source_index);
  return {index_type, as_contiguous_index(target_index, index_type),
          as_contiguous_index(source_index, index_type)};
}

// Checks everything about transfer_rows_'s arguments that needs no look at
// the index values, and returns the indices ready for a kernel.
inline RowPairs prepare_transfer_rows(
    const at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index) {
  constexpr const char* op = "transfer_rows_";
  check_matrix(op, "target", target);
  check_matrix(op, "source", source);
  check_same_device(op, "source", source, target);
  check_index(op, "target_index", target_index, target);
  check_index(op, "source_index", source_index, target);
  TORCH_CHECK_VALUE(
      target_index.numel() == source_index.numel(),
      op, ": target_index has ", target_index.numel(),
      " entries but source_index has ", source_index.numel(),
      "; they are pairs and must have equal length");
  TORCH_CHECK_VALUE(
      target.size(1) == source.size(1),
      op, ": target rows have width ", target.size(1),
      " but source rows have width ", source.size(1),
      "; rows must have the same width");
  check_no_overlap(op, target, source);
  return as_row_pairs(target_index, source_index);
}

// segment_mean_'s inputs ready for a kernel: indices of one integer type,
// int64 offsets, weights in the accumulation type (float64 for a float64
// source, float32 otherwise).
struct Segments {
  RowPairs ids;
  at::Tensor offsets;
  c10::optional<at::Tensor> weights;
};

// Checks everything about segment_mean_'s arguments that needs no look at
// the index values, and returns them ready for a kernel.
inline Segments prepare_segment_mean(
    const at::Tensor& target,
    const at::Tensor& target_index,
    const at::Tensor& source,
    const at::Tensor& source_index,
    const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights) {
  constexpr const char* op = "segment_mean_";
  check_matrix(op, "target", target);
  check_matrix(op, "source", source);
  check_same_device(op, "source", source, target);
  check_index(op, "target_index", target_index, target);
  check_index(op, "source_index", source_index, target);
  check_index(op, "offsets", offsets, target);
  TORCH_CHECK_VALUE(
      offsets.numel() == target_index.numel() + 1,
      op, ": offsets has ", offsets.numel(), " entries but target_index has ",
      target_index.numel(), "; offsets must have one entry per segment plus "
      "one");
  TORCH_CHECK_VALUE(
      target.size(1) == source.size(1),
      op, ": target rows have width ", target.size(1),
      " but source rows have width ", source.size(1),
      "; rows must have the same width");
  if (weights.has_value()) {
    const auto& w = *weights;
    TORCH_CHECK_TYPE(
        is_supported_float(w.scalar_type()),
        op, ": weights must be a floating tensor, got ", w.scalar_type());
    TORCH_CHECK_VALUE(
        w.dim() == 1 && w.numel() == source_index.numel(),
        op, ": weights must be 1-D with one weight per source_index entry (",
        source_index.numel(), "), got shape ", w.sizes());
    check_same_device(op, "weights", w, target);
  }
  check_no_overlap(op, target, source);
  const auto acc_dtype =
      source.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  c10::optional<at::Tensor> acc_weights;
  if (weights.has_value()) {
    acc_weights = weights->to(acc_dtype).contiguous();
  }
  return {as_row_pairs(target_index, source_index),
          as_contiguous_index(offsets, at::kLong), acc_weights};
}

} // namespace vocabxfer
