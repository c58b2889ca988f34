// Argument checks shared by every kernel of every vocabxfer op. Declared
// here, compiled once in checks.cpp by the host compiler: the CUDA fronts
// (.cpp files too) call them, and no .cu file includes ATen's headers.
//
// Every message names the op, the argument and what was expected, and every
// check runs before the first row is written.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace vocabxfer {

// Both indices as contiguous tensors of one integer type (int32 when both
// are int32, int64 otherwise), so that kernels see one dense layout.
struct RowPairs {
  at::ScalarType index_type;
  at::Tensor target_ids;
  at::Tensor source_ids;
};

// segment_mean_'s inputs ready for a kernel: the index pairs, int64 offsets,
// and weights as float64 (whatever the source's dtype).
struct Segments {
  RowPairs ids;
  at::Tensor offsets;
  c10::optional<at::Tensor> weights;
};

// Everything about transfer_rows_'s arguments that needs no look at the
// index values: dtypes, shapes, devices, a writable target that shares no
// memory with the source. Returns the indices ready for a kernel.
RowPairs prepare_transfer_rows(const at::Tensor& target, const at::Tensor& target_index,
                               const at::Tensor& source, const at::Tensor& source_index);

// The same for segment_mean_.
Segments prepare_segment_mean(const at::Tensor& target, const at::Tensor& target_index,
                              const at::Tensor& source, const at::Tensor& source_index,
                              const at::Tensor& offsets,
                              const c10::optional<at::Tensor>& weights);

// The index values, read in host memory: both ranges, then each target row
// at most once. Raises on the first bad value, naming position and value.
void check_transfer_rows_values(const RowPairs& pairs, int64_t target_rows,
                                int64_t source_rows);

// The index type a GPU kernel reads host indices as: int32 when both row
// counts allow it (half the bytes to copy), int64 otherwise.
at::ScalarType packed_index_type(int64_t target_rows, int64_t source_rows);

// Host indices on their way to a GPU: writes them as packed_index_type into
// `packed_targets` and `packed_sources` (host memory, n entries each),
// checking nothing: an out-of-range id is cut to the packed type, so the
// values must be checked (check_transfer_rows_values) before a kernel reads
// them.
void pack_transfer_rows(const RowPairs& pairs, int64_t target_rows, int64_t source_rows,
                        void* packed_targets, void* packed_sources);

// Offsets (0, strictly growing, ending at the piece count), target range and
// uniqueness, source range, then weights (finite, > 0).
void check_segment_mean_values(const Segments& segments, int64_t target_rows,
                               int64_t source_rows);

// Error path of device-side validation: copies the values to the host and
// raises the same error the host checks raise. Never returns.
[[noreturn]] void report_invalid_transfer_rows(const RowPairs& pairs, int64_t target_rows,
                                               int64_t source_rows);
[[noreturn]] void report_invalid_segment_mean(const Segments& segments, int64_t target_rows,
                                              int64_t source_rows);

} // namespace vocabxfer
