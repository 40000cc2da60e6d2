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

// Runs f(T{}) with T = double for fp64, float for fp32, tf32 (only on CUDA), fp16 and
// bf16 (16-bit activations in the forward pass, ActStorage; statistics and solve fp32).
template <typename F>
auto with_precision(const std::string& precision, const Backend& backend, F&& f) {
  if (precision == "fp64") return f(double{});
  if (precision == "fp32" || precision == "tf32" || precision == "fp16" || precision == "bf16") {
    if (precision == "tf32" && backend.name() == "cpu")
      throw Error("--precision tf32 needs --device cuda (TF32 is a tensor-core mode)");
    return f(float{});
  }
  throw Error("--precision must be fp64, fp32, tf32, fp16 or bf16 (got '" + precision + "')");
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
