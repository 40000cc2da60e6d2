#pragma once
// The tail of the reconstruction error from statistics that both backends share
// (cpu/recon.cpp, cuda's error), so they turn the same sums into the same numbers.
#include <cstdint>
#include <vector>

#include "dalr/solver.hpp"

namespace dalr {

// The part of the statistics formula every backend shares: ||E X + e 1^T||^2 =
// quad + 2 e.(E s) + p |e|^2 from quad = <E C, E> and es = E s, in long double.
double residual2(long double quad, const std::vector<long double>& es,
                 const std::vector<double>& ev, int64_t count);

// The error from the squared residuals of the approximation (err2) and of the layer
// itself (ref2); negative rounding noise counts as zero.
ReconError recon_from(double err2, double ref2, int64_t samples);

}  // namespace dalr
