#include "common/recon_common.hpp"

#include <algorithm>
#include <cmath>

#include "common/finite.hpp"

namespace dalr {

double residual2(long double quad, const std::vector<long double>& es,
                 const std::vector<double>& ev, int64_t count) {
  long double lin = 0, cst = 0;
  for (size_t i = 0; i < ev.size(); ++i) {
    lin += ev[i] * es[i];
    cst += static_cast<long double>(ev[i]) * ev[i];
  }
  return static_cast<double>(quad + 2 * lin + static_cast<long double>(count) * cst);
}

ReconError recon_from(double err2, double ref2, int64_t samples) {
  ReconError r;
  r.samples = samples;
  r.abs = std::sqrt(std::max(err2, 0.0));
  r.ref = std::sqrt(std::max(ref2, 0.0));
  r.rel = relative_error(r.abs, r.ref);
  return r;
}

}  // namespace dalr
