#pragma once
// Small pieces the jobs (compress, evaluate, sweep) share.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "common/finite.hpp"
#include "common/split_list.hpp"  // split_list: the command line's lists
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/matrix.hpp"

namespace dalr {

using Clock = std::chrono::steady_clock;

// Seconds since t0, for the jobs' timings.
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs f(T{}) with the job's scalar type: T = double for fp64, float for fp32, tf32,
// fp16 and bf16 (16-bit activations in the forward pass, ActStorage; statistics and
// solve fp32). A job's precision is its backend's (Backend::precision).
template <typename F>
auto with_precision(Precision precision, F&& f) {
  if (uses_double(precision)) return f(double{});
  return f(float{});
}

// A layer read from the model must be finite: NaN or Inf in W or b would reach the
// factors and the file.
template <typename T>
void check_layer_finite(const std::string& name, const Matrix<T>& w, const std::vector<T>& b) {
  if (first_non_finite(w.data.data(), w.data.size()) >= 0)
    throw Error(name + ".weight contains NaN or Inf");
  if (first_non_finite(b.data(), b.size()) >= 0) throw Error(name + ".bias contains NaN or Inf");
}

// Statistics saved by --save-stats, for layer `layer` of shape m x n (compress --stats,
// sweep --stats): throws when they belong to a layer of another shape or name.
template <typename T>
LayerStats<T> load_layer_stats(const std::string& path, const std::string& layer, int64_t m,
                               int64_t n) {
  std::map<std::string, std::string> meta;
  LayerStats<T> st = LayerStats<T>::load(path, &meta);
  if (st.n() == n && st.m() == 0 && m > 0)
    throw Error(path + " holds the statistics of '" + layer +
                "'s inputs only (Python's dalr.Stats(n)); the command line also keeps those of "
                "its outputs: save them from dalr.Stats(n, weight=W, bias=b)");
  if (st.n() != n || st.m() != m)
    throw Error(path + " holds statistics of a " + std::to_string(st.m()) + " x " +
                std::to_string(st.n()) + " layer, but '" + layer + "' is " + std::to_string(m) +
                " x " + std::to_string(n));
  if (meta.count("dalr.layer") && meta["dalr.layer"] != layer)
    throw Error(path + " holds statistics of layer '" + meta["dalr.layer"] + "', not '" + layer +
                "'");
  return st;
}

// The columns `kept` (ascending indices into m) of a rows x m row-major matrix, as a
// rows x kept.size() row-major one: the next layer's weight once its inputs are pruned.
inline std::vector<float> kept_columns(const std::vector<float>& w, int64_t rows, int64_t m,
                                       const std::vector<int64_t>& kept) {
  const int64_t k = static_cast<int64_t>(kept.size());
  std::vector<float> out(static_cast<size_t>(rows * k));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t r = 0; r < k; ++r)
      out[static_cast<size_t>(i * k + r)] = w[static_cast<size_t>(i * m + kept[r])];
  return out;
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
