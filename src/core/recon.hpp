#pragma once
// Reconstruction error of Eq. 13, eps = ||Y - Yhat||_F with Y = W X + b 1^T and
// Yhat the compressed layer's output (pre-activation), streamed over an activation
// file in chunks so that memory does not grow with the number of samples. For
// pruning, the dropped units' outputs count as zero.
#include <cstdint>

#include "dalr/matrix.hpp"
#include "dalr/npy.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace dalr {

template <typename T>
ReconError reconstruction_error(NpyReader& acts, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch);

// The same error from the statistics alone (when the samples are not kept, as when
// they stream from images): ||D X + d 1^T||^2 = <D C, D> + 2 d.(D s) + p |d|^2 with
// D = W - A B, d = b - bias, C = X X^T, s = X 1. Costs one m x n x n product (W C; then
// D C = W C - A (B C)) and a k x n x n one.
template <typename T>
ReconError reconstruction_error(const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f);

// The part of the statistics formula every backend shares: ||E X + e 1^T||^2 =
// quad + 2 e.(E s) + p |e|^2 from quad = <E C, E> and es = E s, in long double.
double residual2(long double quad, const std::vector<long double>& es,
                 const std::vector<double>& ev, int64_t count);

// The error from the squared residuals of the approximation (err2) and of the layer
// itself (ref2); negative rounding noise counts as zero.
ReconError recon_from(double err2, double ref2, int64_t samples);

}  // namespace dalr
