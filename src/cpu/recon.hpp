#pragma once
// Reconstruction error of Eq. 13, eps = ||Y - Yhat||_F with Y = W X + b 1^T and
// Yhat the compressed layer's output (pre-activation), streamed over an activation
// file in chunks so that memory does not grow with the number of samples. For
// pruning, the dropped units' outputs count as zero.
#include <cstdint>

#include "common/recon_common.hpp"
#include "dalr/matrix.hpp"
#include "dalr/npy.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace dalr {

template <typename T>
ReconError reconstruction_error(NpyReader& acts, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch);

// The same error over samples held in memory (x: n x p, one per column; the dual's kept
// samples), in chunks of `batch`.
template <typename T>
ReconError reconstruction_error(const Matrix<T>& x, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch);

// The same error from the statistics alone (when the samples are not kept, as when
// they stream from images): ||D X + d 1^T||^2 = <D C, D> + 2 d.(D s) + p |d|^2 with
// D = W - A B, d = b - bias, C = X X^T, s = X 1. Costs one m x n x n product (W C; then
// D C = W C - A (B C)) and a k x n x n one.
template <typename T>
ReconError reconstruction_error(const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f);

}  // namespace dalr
