#include "cpu/row_stats.hpp"

#include <algorithm>

namespace dalr::cpu {

template <typename T>
void row_sum_max(const T* x, int64_t n, int64_t c, int64_t ldx, const T* bias, bool relu,
                 double* sum, double* max) {
  for (int64_t j = 0; j < c; ++j) {
    const T* col = x + j * ldx;
    for (int64_t i = 0; i < n; ++i) {
      double v = static_cast<double>(col[i]) + (bias ? static_cast<double>(bias[i]) : 0.0);
      if (relu) v = std::max(v, 0.0);
      sum[i] += v;
      max[i] = std::max(max[i], v);
    }
  }
}

template void row_sum_max<float>(const float*, int64_t, int64_t, int64_t, const float*, bool,
                                 double*, double*);
template void row_sum_max<double>(const double*, int64_t, int64_t, int64_t, const double*, bool,
                                  double*, double*);

}  // namespace dalr::cpu
