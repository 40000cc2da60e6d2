// The GPU backend's memory as named terms (memory_terms.hpp). Element counts in double:
// exact for any real layer (below 2^53), and no overflow.
#include "common/memory_terms.hpp"

#include <algorithm>
#include <limits>

namespace dalr {

double total_bytes(const std::vector<MemoryTerm>& terms) {
  double s = 0;
  for (const MemoryTerm& t : terms) s += t.bytes;
  return s;
}

size_t saturated_size(double bytes) {
  return bytes >= double(std::numeric_limits<size_t>::max()) ? std::numeric_limits<size_t>::max()
                                                             : static_cast<size_t>(bytes);
}

namespace {

// LAPACK's documented minimum workspace of syevd with vectors, in elements.
double syevd_ws(double s) {
  return 1 + 6 * s + 2 * s * s;
}

// Terms in elements of `elem` bytes, then the library reserve.
class Terms {
 public:
  explicit Terms(size_t elem) : elem_(double(elem)) {}
  Terms& add(std::string name, double elems) {
    out_.push_back({std::move(name), elems * elem_});
    return *this;
  }
  std::vector<MemoryTerm> with_reserve() {
    out_.push_back({"cuBLAS/cuSOLVER scratch (reserve)", kGpuLibraryReserve});
    return std::move(out_);
  }

 private:
  double elem_;
  std::vector<MemoryTerm> out_;
};

}  // namespace

std::vector<MemoryTerm> gpu_stats_terms(int64_t n, int64_t m, int64_t batch, size_t elem) {
  const double N = double(n), M = double(m), B = double(batch);
  Terms t(elem);
  t.add("C (n x n)", N * N)
      .add("two staging blocks (2 x n x batch)", 2 * N * B)
      .add("W and b (m x n + m)", M * N + M)
      .add("outputs Y (m x batch)", M * B);
  std::vector<MemoryTerm> out = t.with_reserve();
  out.insert(out.end() - 1, {"sums and maxima (2 (n + m) doubles)", 2 * (N + M) * 8});
  return out;
}

std::vector<MemoryTerm> gpu_solve_terms(Method method, int64_t m, int64_t n, int64_t k,
                                        size_t elem) {
  const double M = double(m), N = double(n), K = double(k);
  const double R = double(std::min(m, n)), big = double(std::max(m, n));
  Terms t(elem);
  switch (method) {
    case Method::Dalr:
      t.add("W and W C (2 x m x n)", 2 * M * N)
          .add("C, factored in place (n x n)", N * N)
          .add("G (m x m)", M * M)
          .add("eigenvalues of G and C, 1/w (m + 2 n)", M + 2 * N)
          .add("U_k (m x k)", M * K)
          .add("B^T and the ridge's scratch (2 x n x k)", 2 * N * K)
          .add("B (k x n)", K * N)
          .add("eigensolver workspace (syevd, m or n)", std::max(syevd_ws(M), syevd_ws(N)));
      return t.with_reserve();
    case Method::DalrExact:
      t.add("W, W C, W_r^T and the ridge's scratch (4 x m x n)", 4 * M * N)
          .add("C, factored in place (n x n)", N * N)
          .add("H (m x m)", M * M)
          .add("eigenvalues of H and C, 1/w (m + 2 n)", M + 2 * N)
          .add("U_k (m x k)", M * K)
          .add("B (k x n)", K * N)
          .add("eigensolver workspace (syevd, m or n)", std::max(syevd_ws(M), syevd_ws(N)));
      return t.with_reserve();
    case Method::Svd:
    case Method::SvdBc:
      t.add("W and its transpose (2 x m x n)", 2 * M * N)
          .add("singular values (min(m, n))", R)
          .add("U (max(m, n) x min(m, n))", big * R)
          .add("V^T (min(m, n)^2)", R * R)
          .add("A and B (m x k + k x n)", M * K + K * N)
          .add("gesvd workspace", big * R + R * R + 64 * (big + R));
      return t.with_reserve();
    case Method::PruneMean:
    case Method::PruneMax:
      break;  // a sort on the host: no device memory
  }
  return {};
}

std::vector<MemoryTerm> gpu_solve_dual_terms(int64_t m, int64_t n, int64_t p, int64_t k,
                                             size_t elem) {
  const double M = double(m), N = double(n), P = double(p), K = double(k);
  Terms t(elem);
  t.add("W (m x n, freed after Z)", M * N)
      .add("X (n x p)", N * P)
      .add("Z = W X (m x p)", M * P)
      .add("K = X^T X and its factor (2 x p x p)", 2 * P * P)
      .add("Z^T, K Z^T and the ridge's scratch (3 x p x m)", 3 * P * M)
      .add("G or H (m x m)", M * M)
      .add("eigenvalues, 1/w (m + 2 p)", M + 2 * P)
      .add("U_k, S, B (m k + p k + k n)", M * K + P * K + K * N)
      .add("eigensolver workspace (syevd, m or p)", std::max(syevd_ws(M), syevd_ws(P)));
  return t.with_reserve();
}

std::vector<MemoryTerm> gpu_error_terms(int64_t m, int64_t n, int64_t k, bool c_on_device,
                                        size_t elem) {
  const double M = double(m), N = double(n), K = double(k);
  Terms t(elem);
  if (!c_on_device) t.add("C (n x n)", N * N);
  t.add("W and W C, becoming D and D C (2 x m x n)", 2 * M * N)
      .add("A, B and B C (m k + 2 k n)", M * K + 2 * K * N)
      .add("s and W s (n + m)", N + M);
  return t.with_reserve();
}

}  // namespace dalr
