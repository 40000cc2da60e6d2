#pragma once
// Small pieces the jobs (compress, evaluate, sweep) share.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "common/split_list.hpp"  // split_list: the command line's lists
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/matrix.hpp"

namespace dalr {

// Runs f(T{}) with the job's scalar type: T = double for fp64, float for fp32, tf32,
// fp16 and bf16 (16-bit activations in the forward pass, ActStorage; statistics and
// solve fp32). A job's precision is its backend's (Backend::precision).
template <typename F>
auto with_precision(Precision precision, F&& f) {
  if (uses_double(precision)) return f(double{});
  return f(float{});
}

// Indices of the k largest values of column j of a (classes x batch) matrix, best first.
template <typename T>
std::vector<int64_t> top_k(const Matrix<T>& logits, int64_t j, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(logits.rows));
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min<int64_t>(k, logits.rows);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return logits(a, j) > logits(b, j); });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace dalr
