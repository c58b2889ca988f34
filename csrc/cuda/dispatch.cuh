// What the .cu files share: dtype dispatch without ATen's headers, and the
// block shapes of the row kernels.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "launchers.h"

namespace vocabxfer {
namespace cuda {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with the C++ type of a float dtype.
template <typename F>
void dispatch_float(c10::ScalarType dtype, F&& f) {
  switch (dtype) {
    case c10::ScalarType::Double: f(TypeTag<double>{}); break;
    case c10::ScalarType::Float: f(TypeTag<float>{}); break;
    case c10::ScalarType::Half: f(TypeTag<c10::Half>{}); break;
    case c10::ScalarType::BFloat16: f(TypeTag<c10::BFloat16>{}); break;
    default: TORCH_CHECK(false, "vocabxfer: no CUDA kernel for dtype ", dtype);
  }
}

template <typename F>
void dispatch_index(const IndexView& index, F&& f) {
  if (index.is_int64) {
    f(TypeTag<int64_t>{});
  } else {
    f(TypeTag<int32_t>{});
  }
}

constexpr int kThreadsPerBlock = 256;

// A block of kThreadsPerBlock threads as (threads per row) x (rows at once):
// a row's `units` (vectors or packs) are shared by a power of two of threads,
// each taking about `per_thread` of them, so that narrow rows leave no thread
// idle and wide rows give each thread several independent loads in flight.
inline dim3 row_block(int64_t units, int per_thread) {
  const int64_t wanted = (units + per_thread - 1) / per_thread;
  int threads_x = 1;
  while (threads_x < wanted && threads_x < kThreadsPerBlock) {
    threads_x *= 2;
  }
  return dim3(threads_x, kThreadsPerBlock / threads_x);
}

// One block for every `rows_per_block` rows: on an H200 this beat a few
// waves of resident blocks with a grid-stride loop (kernel_sweep.md). The
// kernels keep the loop for grids past the 2^31 - 1 blocks a launch allows.
inline unsigned int row_grid(int64_t rows, unsigned int rows_per_block) {
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(needed, INT32_MAX)));
}

} // namespace cuda
} // namespace vocabxfer
