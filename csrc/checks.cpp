// Host-only argument checks of the vocabxfer ops (see checks.h).
#include "checks.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace vocabxfer {
namespace {

bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf ||
      dtype == at::kBFloat16;
}

// A 2-D matrix of float64, float32, float16 or bfloat16 rows.
void check_matrix(const char* op, const char* name, const at::Tensor& matrix) {
  TORCH_CHECK_TYPE(
      is_supported_float(matrix.scalar_type()),
      op, ": ", name, " must be float64, float32, float16 or bfloat16, got ",
      matrix.scalar_type());
  TORCH_CHECK_VALUE(
      matrix.dim() == 2,
      op, ": ", name, " must be 2-D (rows x width), got ", matrix.dim(),
      "-D with shape ", matrix.sizes());
}

void check_same_device(const char* op, const char* name, const at::Tensor& tensor,
                       const at::Tensor& target) {
  TORCH_CHECK_VALUE(
      tensor.device() == target.device(),
      op, ": ", name, " is on ", tensor.device(), " but target is on ",
      target.device(), "; all tensors must be on one device");
}

// A 1-D int32 or int64 index on the target's device, or on the CPU (a GPU
// target then reads it through one asynchronous copy).
void check_index(const char* op, const char* name, const at::Tensor& index,
                 const at::Tensor& target) {
  TORCH_CHECK_TYPE(
      index.scalar_type() == at::kLong || index.scalar_type() == at::kInt,
      op, ": ", name, " must be int64 or int32, got ", index.scalar_type());
  TORCH_CHECK_VALUE(
      index.dim() == 1,
      op, ": ", name, " must be 1-D, got ", index.dim(), "-D with shape ",
      index.sizes());
  TORCH_CHECK_VALUE(
      index.device() == target.device() || index.is_cpu(),
      op, ": ", name, " is on ", index.device(), " but target is on ", target.device(),
      "; indices must be on the target's device or on the CPU");
}

// Every index argument on one device: all on the CPU, or all on the target's.
void check_same_index_device(const char* op, const char* first_name, const at::Tensor& first,
                             const char* name, const at::Tensor& index) {
  TORCH_CHECK_VALUE(
      index.device() == first.device(),
      op, ": ", first_name, " is on ", first.device(), " but ", name, " is on ",
      index.device(), "; pass every index on one device (the CPU, or the target's)");
}

// True when two elements of `tensor` may share memory. Dimensions sorted by
// stride must each step past everything the smaller ones span; this refuses
// expanded views and as_strided views whose rows overlap (and, rarely, an
// exotic layout that interleaves without overlapping).
bool may_have_internal_overlap(const at::Tensor& tensor) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (tensor.size(d) == 0) {
      return false;
    }
    if (tensor.size(d) > 1) {
      dims.emplace_back(tensor.stride(d), tensor.size(d));
    }
  }
  std::sort(dims.begin(), dims.end());
  int64_t extent = 0;
  for (const auto& [stride, size] : dims) {
    if (stride <= extent) {
      return true;
    }
    extent += (size - 1) * stride;
  }
  return false;
}

// The target is written in place, so it must be writable here and now.
void check_target_writable(const char* op, const at::Tensor& target) {
  TORCH_CHECK_VALUE(
      !(target.is_inference() && !c10::InferenceMode::is_enabled()),
      op, ": target is an inference tensor (made under torch.inference_mode()) "
      "and cannot be written outside inference mode; call the op inside "
      "torch.inference_mode(), or pass a tensor made outside it (target.clone())");
  TORCH_CHECK_VALUE(
      !may_have_internal_overlap(target),
      op, ": target has elements that share memory (an expanded or stride-0 "
      "view, or an as_strided view whose rows overlap); pass a tensor whose "
      "elements are distinct, e.g. target.clone()");
}

// Bytes [first, last) that a tensor's elements span.
std::pair<uintptr_t, uintptr_t> byte_span(const at::Tensor& tensor) {
  int64_t last_offset = 0;
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    last_offset += (tensor.size(d) - 1) * tensor.stride(d);
  }
  const auto first = reinterpret_cast<uintptr_t>(tensor.const_data_ptr());
  return {first, first + static_cast<uintptr_t>((last_offset + 1) * tensor.element_size())};
}

// Decided by address ranges, not by storage identity: two Storage objects
// may hold the same memory (torch.from_numpy twice on one array, say).
void check_no_overlap(const char* op, const at::Tensor& target, const at::Tensor& source) {
  if (target.numel() == 0 || source.numel() == 0) {
    return;
  }
  const auto [target_first, target_last] = byte_span(target);
  const auto [source_first, source_last] = byte_span(source);
  TORCH_CHECK_VALUE(
      target_last <= source_first || source_last <= target_first,
      op, ": target and source share memory, so rows could be overwritten "
      "before they are read; pass source.clone() instead");
}

// What both ops check first: two float matrices and two indices on one device.
void check_rows(const char* op, const at::Tensor& target, const at::Tensor& target_index,
                const at::Tensor& source, const at::Tensor& source_index) {
  check_matrix(op, "target", target);
  check_matrix(op, "source", source);
  check_same_device(op, "source", source, target);
  check_index(op, "target_index", target_index, target);
  check_index(op, "source_index", source_index, target);
  check_same_index_device(op, "target_index", target_index, "source_index", source_index);
}

void check_width(const char* op, const at::Tensor& target, const at::Tensor& source) {
  TORCH_CHECK_VALUE(
      target.size(1) == source.size(1),
      op, ": target rows have width ", target.size(1), " but source rows have width ",
      source.size(1), "; rows must have the same width");
}

RowPairs as_row_pairs(const at::Tensor& target_index, const at::Tensor& source_index) {
  const auto index_type = target_index.scalar_type() == source_index.scalar_type()
      ? target_index.scalar_type()
      : at::kLong;
  return {index_type, target_index.to(index_type).contiguous(),
          source_index.to(index_type).contiguous()};
}

// ---- value checks, in host memory -------------------------------------------

template <typename index_t>
void check_range(const char* op, const char* name, const at::Tensor& index, int64_t rows,
                 const char* rows_of) {
  const index_t* data = index.const_data_ptr<index_t>();
  const int64_t n = index.numel();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t value = static_cast<int64_t>(data[i]);
    TORCH_CHECK_INDEX(
        value >= 0 && value < rows,
        op, ": ", name, "[", i, "] = ", value, " is out of range for ", rows_of,
        " with ", rows, " rows");
  }
}

// Requires the range check to have passed.
template <typename index_t>
void check_unique(const char* op, const char* name, const at::Tensor& index, int64_t rows) {
  const index_t* data = index.const_data_ptr<index_t>();
  const int64_t n = index.numel();
  std::vector<bool> seen(static_cast<size_t>(rows), false);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t value = static_cast<int64_t>(data[i]);
    if (!seen[value]) {
      seen[value] = true;
      continue;
    }
    const int64_t first = std::find(data, data + i, data[i]) - data;
    TORCH_CHECK_VALUE(
        false, op, ": ", name, " holds row ", value, " twice (positions ", first, " and ", i,
        "); each target row may be written once, so the token map has a duplicate");
  }
}

// offsets must start at 0, end at the number of pieces and grow strictly:
// an empty segment has no mean.
void check_offsets(const char* op, const at::Tensor& offsets, int64_t pieces) {
  const int64_t* data = offsets.const_data_ptr<int64_t>();
  const int64_t segments = offsets.numel() - 1;
  TORCH_CHECK_VALUE(data[0] == 0, op, ": offsets[0] = ", data[0], " but must be 0");
  TORCH_CHECK_VALUE(
      data[segments] == pieces,
      op, ": offsets[", segments, "] = ", data[segments],
      " but must equal the length of source_index (", pieces, ")");
  for (int64_t s = 0; s < segments; ++s) {
    TORCH_CHECK_VALUE(
        data[s + 1] > data[s],
        op, ": segment ", s, " is empty or reversed (offsets[", s, "] = ", data[s],
        ", offsets[", s + 1, "] = ", data[s + 1],
        "); every segment needs at least one source row");
  }
}

template <typename weight_t>
void check_weights(const char* op, const at::Tensor& weights) {
  const weight_t* data = weights.const_data_ptr<weight_t>();
  for (int64_t i = 0; i < weights.numel(); ++i) {
    TORCH_CHECK_VALUE(
        std::isfinite(data[i]) && data[i] > 0,
        op, ": weights[", i, "] = ", data[i],
        " but weights must be finite and greater than 0");
  }
}

// Index sets from this many pairs up are checked and packed by several
// threads: below it, handing the work out costs more than it saves.
constexpr int64_t kParallelPairs = 32768;

// How many threads share `n` pairs: one per kParallelPairs / 2 pairs, at
// most at::get_num_threads().
int64_t chunks_for(int64_t n) {
  if (n < kParallelPairs) {
    return 1;
  }
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / (kParallelPairs / 2)));
}

// Both ranges of pairs [begin, end), and each of their target rows marked in
// `seen` (a bit per row), once. False at the first bad value.
template <typename index_t>
bool scan_range(const index_t* targets, const index_t* sources, int64_t begin, int64_t end,
                int64_t target_rows, int64_t source_rows, uint64_t* seen) {
  for (int64_t i = begin; i < end; ++i) {
    // A negative id becomes a huge unsigned one: one comparison per range.
    const auto target = static_cast<uint64_t>(static_cast<int64_t>(targets[i]));
    const auto source = static_cast<uint64_t>(static_cast<int64_t>(sources[i]));
    if (target >= static_cast<uint64_t>(target_rows) ||
        source >= static_cast<uint64_t>(source_rows)) {
      return false;
    }
    uint64_t& word = seen[target >> 6];
    const uint64_t bit = uint64_t{1} << (target & 63);
    if (word & bit) {
      return false;
    }
    word |= bit;
  }
  return true;
}

// transfer_rows_'s value checks, building no message: both ranges, and each
// target row once. False at the first bad value; the detailed checks then
// name it. A large index set is cut into chunks, each scanned by a thread
// into its own bitmap; the bitmaps are then merged word by word, a bit set
// in two of them being a row repeated across chunks. The bitmaps together
// hold no more words than there are pairs (zeroing and merging them must
// not cost more than the scan), so a few ids into a huge target are
// scanned by fewer threads, or one.
template <typename index_t>
bool scan_pairs(const index_t* targets, const index_t* sources, int64_t n, int64_t target_rows,
                int64_t source_rows) {
  const int64_t words = (target_rows + 63) / 64;
  const int64_t most_chunks = n / std::max<int64_t>(words, 1);
  const int64_t chunks = std::max<int64_t>(1, std::min(chunks_for(n), most_chunks));
  if (chunks == 1) {
    std::vector<uint64_t> seen(static_cast<size_t>(words), 0);
    return scan_range(targets, sources, 0, n, target_rows, source_rows, seen.data());
  }
  // Not zeroed here: each thread zeroes its own bitmap.
  const std::unique_ptr<uint64_t[]> seen(new uint64_t[static_cast<size_t>(chunks * words)]);
  std::atomic<bool> valid{true};
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last && valid.load(std::memory_order_relaxed);
         ++chunk) {
      uint64_t* map = seen.get() + chunk * words;
      std::fill(map, map + words, uint64_t{0});
      if (!scan_range(targets, sources, n * chunk / chunks, n * (chunk + 1) / chunks,
                      target_rows, source_rows, map)) {
        valid.store(false, std::memory_order_relaxed);
      }
    }
  });
  if (!valid.load()) {
    return false;
  }
  at::parallel_for(0, words, 1024, [&](int64_t first, int64_t last) {
    for (int64_t w = first; w < last && valid.load(std::memory_order_relaxed); ++w) {
      uint64_t marked = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const uint64_t bits = seen[chunk * words + w];
        if (marked & bits) {
          valid.store(false, std::memory_order_relaxed);
          break;
        }
        marked |= bits;
      }
    }
  });
  return valid.load();
}

// The checks one at a time, raising at the first bad value with its position.
void name_bad_transfer_rows_value(const RowPairs& pairs, int64_t target_rows,
                                  int64_t source_rows) {
  constexpr const char* op = "transfer_rows_";
  AT_DISPATCH_INDEX_TYPES(pairs.index_type, "transfer_rows_", [&] {
    check_range<index_t>(op, "target_index", pairs.target_ids, target_rows, "target");
    check_range<index_t>(op, "source_index", pairs.source_ids, source_rows, "source");
    check_unique<index_t>(op, "target_index", pairs.target_ids, target_rows);
  });
}

RowPairs on_host(const RowPairs& pairs) {
  return {pairs.index_type, pairs.target_ids.cpu(), pairs.source_ids.cpu()};
}

} // namespace

RowPairs prepare_transfer_rows(const at::Tensor& target, const at::Tensor& target_index,
                               const at::Tensor& source, const at::Tensor& source_index) {
  constexpr const char* op = "transfer_rows_";
  check_rows(op, target, target_index, source, source_index);
  TORCH_CHECK_VALUE(
      target_index.numel() == source_index.numel(),
      op, ": target_index has ", target_index.numel(), " entries but source_index has ",
      source_index.numel(), "; they are pairs and must have equal length");
  check_width(op, target, source);
  check_target_writable(op, target);
  check_no_overlap(op, target, source);
  return as_row_pairs(target_index, source_index);
}

Segments prepare_segment_mean(const at::Tensor& target, const at::Tensor& target_index,
                              const at::Tensor& source, const at::Tensor& source_index,
                              const at::Tensor& offsets,
                              const c10::optional<at::Tensor>& weights) {
  constexpr const char* op = "segment_mean_";
  check_rows(op, target, target_index, source, source_index);
  check_index(op, "offsets", offsets, target);
  check_same_index_device(op, "target_index", target_index, "offsets", offsets);
  TORCH_CHECK_VALUE(
      offsets.numel() == target_index.numel() + 1,
      op, ": offsets has ", offsets.numel(), " entries but target_index has ",
      target_index.numel(), "; offsets must have one entry per segment plus one");
  check_width(op, target, source);
  if (weights.has_value()) {
    const auto& w = *weights;
    TORCH_CHECK_TYPE(
        is_supported_float(w.scalar_type()),
        op, ": weights must be a floating tensor, got ", w.scalar_type());
    TORCH_CHECK_VALUE(
        w.dim() == 1 && w.numel() == source_index.numel(),
        op, ": weights must be 1-D with one weight per source_index entry (",
        source_index.numel(), "), got shape ", w.sizes());
    TORCH_CHECK_VALUE(
        w.device() == target_index.device(),
        op, ": weights are on ", w.device(), " but the indices on ", target_index.device(),
        "; pass the weights where the indices are");
  }
  check_target_writable(op, target);
  check_no_overlap(op, target, source);
  // Weights are read as float64 whatever the source: float32 would turn a
  // valid 1e308 into inf and 1e-50 into 0 before they are checked.
  c10::optional<at::Tensor> acc_weights;
  if (weights.has_value()) {
    acc_weights = weights->to(at::kDouble).contiguous();
  }
  return {as_row_pairs(target_index, source_index), offsets.to(at::kLong).contiguous(),
          acc_weights};
}

void check_transfer_rows_values(const RowPairs& pairs, int64_t target_rows,
                                int64_t source_rows) {
  bool valid = false;
  AT_DISPATCH_INDEX_TYPES(pairs.index_type, "transfer_rows_", [&] {
    valid = scan_pairs<index_t>(pairs.target_ids.const_data_ptr<index_t>(),
                                pairs.source_ids.const_data_ptr<index_t>(),
                                pairs.target_ids.numel(), target_rows, source_rows);
  });
  if (!valid) {
    name_bad_transfer_rows_value(pairs, target_rows, source_rows);
  }
}

at::ScalarType packed_index_type(int64_t target_rows, int64_t source_rows) {
  constexpr int64_t kInt32Rows = int64_t{1} << 31;
  return target_rows <= kInt32Rows && source_rows <= kInt32Rows ? at::kInt : at::kLong;
}

void pack_transfer_rows(const RowPairs& pairs, int64_t target_rows, int64_t source_rows,
                        void* packed_targets, void* packed_sources) {
  const int64_t n = pairs.target_ids.numel();
  AT_DISPATCH_INDEX_TYPES(pairs.index_type, "transfer_rows_", [&] {
    const index_t* targets = pairs.target_ids.const_data_ptr<index_t>();
    const index_t* sources = pairs.source_ids.const_data_ptr<index_t>();
    // Plain conversion loops, which the compiler vectorises, over as many
    // threads as the check uses.
    const auto pack = [&](auto* out_targets, auto* out_sources) {
      using packed_t = std::remove_pointer_t<decltype(out_targets)>;
      const int64_t chunks = chunks_for(n);
      at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
        for (int64_t i = n * first / chunks; i < n * last / chunks; ++i) {
          out_targets[i] = static_cast<packed_t>(targets[i]);
        }
        for (int64_t i = n * first / chunks; i < n * last / chunks; ++i) {
          out_sources[i] = static_cast<packed_t>(sources[i]);
        }
      });
    };
    if (packed_index_type(target_rows, source_rows) == at::kInt) {
      pack(static_cast<int32_t*>(packed_targets), static_cast<int32_t*>(packed_sources));
    } else {
      pack(static_cast<int64_t*>(packed_targets), static_cast<int64_t*>(packed_sources));
    }
  });
}

void check_segment_mean_values(const Segments& segments, int64_t target_rows,
                               int64_t source_rows) {
  constexpr const char* op = "segment_mean_";
  const RowPairs& ids = segments.ids;
  check_offsets(op, segments.offsets, ids.source_ids.numel());
  AT_DISPATCH_INDEX_TYPES(ids.index_type, "segment_mean_", [&] {
    check_range<index_t>(op, "target_index", ids.target_ids, target_rows, "target");
    check_unique<index_t>(op, "target_index", ids.target_ids, target_rows);
    check_range<index_t>(op, "source_index", ids.source_ids, source_rows, "source");
  });
  if (segments.weights.has_value()) {
    check_weights<double>(op, *segments.weights);
  }
}

void report_invalid_transfer_rows(const RowPairs& pairs, int64_t target_rows,
                                  int64_t source_rows) {
  name_bad_transfer_rows_value(on_host(pairs), target_rows, source_rows);
  TORCH_CHECK(false, "transfer_rows_: the device found a bad index that the host check did "
              "not; please report this as a bug");
}

void report_invalid_segment_mean(const Segments& segments, int64_t target_rows,
                                 int64_t source_rows) {
  c10::optional<at::Tensor> weights;
  if (segments.weights.has_value()) {
    weights = segments.weights->cpu();
  }
  check_segment_mean_values({on_host(segments.ids), segments.offsets.cpu(), weights},
                            target_rows, source_rows);
  TORCH_CHECK(false, "segment_mean_: the device found a bad argument that the host check did "
              "not; please report this as a bug");
}

} // namespace vocabxfer
