#pragma once
// The asymmetric fit of a layer in sequential compression (Zhang et al., "Accelerating
// very deep convolutional networks", 2015): the compressed layer takes the inputs X^ it
// sees in the network whose earlier layers are already compressed, and is fitted to the
// ORIGINAL layer's outputs W X (X: the same samples' inputs in the original network):
//   min_{A, B} ||W X - A B X^||_F^2 + lambda ||A B||_F^2,   rank(A B) <= k.
// Its statistics: C^ = X^ X^^T (the ordinary LayerStats of X^), C_o = X X^T (of X) and the
// cross product K = X X^^T (n x n), all from the same samples in the same order.
//   W_r = W K (C^ + lambda I)^-1 (a Cholesky solve)
//   dalr-exact: U_k = top-k eigenvectors of W_r (C^ + lambda I) W_r^T (the exact minimiser)
//   dalr:       U_k = top-k eigenvectors of W C_o W^T (the original outputs' Gram, Eq. 11)
//   A = U_k, B = U_k^T W_r, bias = b.
// With X^ = X both are the ordinary solve (solver.hpp).
#include <cstdint>
#include <memory>
#include <vector>

#include "dalr/conv_geometry.hpp"
#include "dalr/matrix.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace dalr {

// Streams pairs of batches into K = sum_j x_j x^_j^T (n x n, not symmetric).
template <typename T>
class CrossAccumulator {
 public:
  virtual ~CrossAccumulator() = default;
  // x (original) and xh (compressed network), both `width` x cols, column-major, leading
  // dimension ldx, host memory reusable when the call returns: an fc layer's inputs
  // (width n), or a conv layer's input feature maps (width map_size, one image per
  // column; cut into patches as PatchAccumulator cuts them).
  virtual void add(const T* x, const T* xh, int64_t cols, int64_t ldx) = 0;
  virtual Matrix<T> result() = 0;
};

// The three statistics of one layer (pointers to the caller's; same count).
template <typename T>
struct AsymmetricStats {
  const LayerStats<T>* hat = nullptr;   // C^ of X^ (sums, count, lambda's trace)
  const LayerStats<T>* orig = nullptr;  // C_o of X
  const Matrix<T>* cross = nullptr;     // K = X X^^T
};

// The host implementations behind Backend's defaults (src/cpu/asymmetric.cpp).
// g null: fc inputs of width n; else conv feature maps of geometry g, `tile_cols`
// patches at a time.
template <typename T>
std::unique_ptr<CrossAccumulator<T>> host_cross_accumulator(int64_t n, const ConvGeometry* g,
                                                            int64_t tile_cols);
// dalr or dalr-exact (other methods throw); opt.lambda is the absolute lambda on C^.
template <typename T>
Factors<T> asymmetric_solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                            const AsymmetricStats<T>& st);
// ||W X + b 1^T - (A B X^ + bias 1^T)||_F against ||W X + b 1^T||_F, from C_o, K, C^ and
// the sums: <W C_o, W> - 2 <W K, A B> + <A B C^, A B> plus the bias terms.
template <typename T>
ReconError asymmetric_error(const AsymmetricStats<T>& st, const Matrix<T>& w,
                            const std::vector<T>& b, const Factors<T>& f);

}  // namespace dalr
