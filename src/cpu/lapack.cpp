#include "cpu/lapack.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dalr/error.hpp"

namespace dalr::cpu {

void throw_lapack(const char* routine, int64_t info, const char* hint) {
  std::string msg =
      std::string("LAPACK ") + routine + " failed (info = " + std::to_string(info) + ")";
  if (info < 0)
    msg += ": argument " + std::to_string(-info) + " is invalid (internal error)";
  else if (hint)
    msg += std::string(": ") + hint;
  throw Error(msg);
}

namespace {

// A workspace size returned by a query in T: in float, sizes above 2^24 are rounded
// and can come back one short of the minimum (LAPACK then fails with info = -lwork).
// Round up, and never go below the documented minimum.
template <typename T>
size_t workspace(T queried, int64_t documented_min) {
  const double q = static_cast<double>(queried) * (1.0 + 4.0 * std::numeric_limits<T>::epsilon());
  const double need = std::max<double>({std::ceil(q), double(documented_min), 1.0});
  if (need > double(std::numeric_limits<lapack_int>::max()))
    throw Error("the problem is too large for this LAPACK's 32-bit workspace sizes (" +
                std::to_string(static_cast<int64_t>(need)) + " elements needed)");
  return static_cast<size_t>(need);
}

template <typename T, typename Work>
void syevd_impl(const char* name, Work work, char jobz, char uplo, int64_t n, T* a, int64_t lda,
                T* w) {
  T lwork_q = 0;
  lapack_int liwork_q = 0;
  lapack_int info = work(LAPACK_COL_MAJOR, jobz, uplo, n, a, lda, w, &lwork_q, -1, &liwork_q, -1);
  if (info != 0) throw_lapack(name, info, "workspace query");
  const bool vectors = jobz == 'V' || jobz == 'v';
  std::vector<T> wk(workspace(lwork_q, vectors ? 1 + 6 * n + 2 * n * n : 2 * n + 1));
  std::vector<lapack_int> iwk(
      static_cast<size_t>(std::max<int64_t>(liwork_q, vectors ? 3 + 5 * n : 1)));
  info = work(LAPACK_COL_MAJOR, jobz, uplo, n, a, lda, w, wk.data(),
              static_cast<lapack_int>(wk.size()), iwk.data(), static_cast<lapack_int>(iwk.size()));
  if (info != 0)
    throw_lapack(name, info,
                 "the eigensolver did not converge (input has NaN/Inf or is badly scaled)");
}

// The LAPACK routines of one precision that syev_range chains.
template <typename T>
struct RangeRoutines;
template <>
struct RangeRoutines<float> {
  static constexpr const char* sytrd = "ssytrd";
  static constexpr const char* stemr = "sstemr";
  static constexpr const char* ormtr = "sormtr";
  static constexpr auto tridiag = LAPACKE_ssytrd_work;
  static constexpr auto mrrr = LAPACKE_sstemr_work;
  static constexpr auto back = LAPACKE_sormtr_work;
};
template <>
struct RangeRoutines<double> {
  static constexpr const char* sytrd = "dsytrd";
  static constexpr const char* stemr = "dstemr";
  static constexpr const char* ormtr = "dormtr";
  static constexpr auto tridiag = LAPACKE_dsytrd_work;
  static constexpr auto mrrr = LAPACKE_dstemr_work;
  static constexpr auto back = LAPACKE_dormtr_work;
};

// ?syevr's own steps, but MRRR for the subset too: ?syevr sends a partial index range to
// bisection and inverse iteration (?stebz + ?stein), which reorthogonalises every cluster
// of eigenvalues closer than 1e-3 ||A||, O(n c^2): on a decaying spectrum (G's) the small
// eigenvalues form one cluster, and 1024 of 4096 took 101 s against the full solve's 8 s
// (bench/RESULTS.md). ?stemr computes any subset in O(n k) without reorthogonalising.
template <typename T>
void syev_range_impl(char uplo, int64_t n, T* a, int64_t lda, int64_t il, int64_t iu, T* w, T* z,
                     int64_t ldz) {
  using R = RangeRoutines<T>;
  const int64_t want = iu - il + 1;
  if (il < 1 || iu > n || want < 1)
    throw Error(std::string("eigenpairs ") + std::to_string(il) + ".." + std::to_string(iu) +
                " of a " + std::to_string(n) + " x " + std::to_string(n) +
                " matrix asked for (internal error)");
  const size_t un = static_cast<size_t>(n);
  std::vector<T> d(un), e(un), tau(std::max<size_t>(un, 1)), all_w(un);
  // 1. A = Q T Q^T, T tridiagonal (d, e), Q kept as reflectors in a and tau.
  T q = 0;
  lapack_int info =
      R::tridiag(LAPACK_COL_MAJOR, uplo, n, a, lda, d.data(), e.data(), tau.data(), &q, -1);
  if (info != 0) throw_lapack(R::sytrd, info, "workspace query");
  std::vector<T> wk(workspace(q, 1));
  info = R::tridiag(LAPACK_COL_MAJOR, uplo, n, a, lda, d.data(), e.data(), tau.data(), wk.data(),
                    static_cast<lapack_int>(wk.size()));
  if (info != 0) throw_lapack(R::sytrd, info, nullptr);
  // 2. Eigenpairs il..iu of T by MRRR.
  lapack_int found = 0, iq = 0;
  lapack_logical tryrac = 1;  // high relative accuracy where T allows it
  std::vector<lapack_int> isuppz(static_cast<size_t>(2 * want));
  info = R::mrrr(LAPACK_COL_MAJOR, 'V', 'I', n, d.data(), e.data(), T(0), T(0), il, iu, &found,
                 all_w.data(), z, ldz, want, isuppz.data(), &tryrac, &q, -1, &iq, -1);
  if (info != 0) throw_lapack(R::stemr, info, "workspace query");
  wk.assign(workspace(q, 18 * n), T(0));
  std::vector<lapack_int> iwk(static_cast<size_t>(std::max<int64_t>({iq, 10 * n, 1})));
  info =
      R::mrrr(LAPACK_COL_MAJOR, 'V', 'I', n, d.data(), e.data(), T(0), T(0), il, iu, &found,
              all_w.data(), z, ldz, want, isuppz.data(), &tryrac, wk.data(),
              static_cast<lapack_int>(wk.size()), iwk.data(), static_cast<lapack_int>(iwk.size()));
  if (info != 0)
    throw_lapack(R::stemr, info,
                 "the top-k eigensolver failed (input has NaN/Inf?); --eigensolver full avoids it");
  if (found != want)
    throw Error(std::string("LAPACK ") + R::stemr + " returned " + std::to_string(found) +
                " of the " + std::to_string(want) + " eigenpairs asked for (input has NaN/Inf?)");
  // 3. The eigenvectors of A: Q times those of T.
  info = R::back(LAPACK_COL_MAJOR, 'L', uplo, 'N', n, want, a, lda, tau.data(), z, ldz, &q, -1);
  if (info != 0) throw_lapack(R::ormtr, info, "workspace query");
  wk.assign(workspace(q, std::max<int64_t>(want, 1)), T(0));
  info = R::back(LAPACK_COL_MAJOR, 'L', uplo, 'N', n, want, a, lda, tau.data(), z, ldz, wk.data(),
                 static_cast<lapack_int>(wk.size()));
  if (info != 0) throw_lapack(R::ormtr, info, nullptr);
  std::copy_n(all_w.begin(), want, w);
}

template <typename T, typename Work>
void gesdd_impl(const char* name, Work work, int64_t m, int64_t n, T* a, int64_t lda, T* s, T* u,
                int64_t ldu, T* vt, int64_t ldvt) {
  const int64_t r = std::min(m, n);
  std::vector<lapack_int> iwk(static_cast<size_t>(8 * std::max<int64_t>(r, 1)));
  T lwork_q = 0;
  lapack_int info =
      work(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt, &lwork_q, -1, iwk.data());
  if (info != 0) throw_lapack(name, info, "workspace query");
  const int64_t mx = std::max(m, n);
  std::vector<T> wk(workspace(lwork_q, 3 * r * r + std::max(mx, 4 * r * r + 4 * r)));
  info = work(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt, wk.data(),
              static_cast<lapack_int>(wk.size()), iwk.data());
  if (info != 0) throw_lapack(name, info, "the SVD did not converge (input has NaN/Inf?)");
}

const char* kNotPd =
    "the matrix is not positive definite (C + lambda I needs lambda > 0 when C is singular)";

}  // namespace

void syevd(char jobz, char uplo, int64_t n, float* a, int64_t lda, float* w) {
  syevd_impl("ssyevd", LAPACKE_ssyevd_work, jobz, uplo, n, a, lda, w);
}
void syevd(char jobz, char uplo, int64_t n, double* a, int64_t lda, double* w) {
  syevd_impl("dsyevd", LAPACKE_dsyevd_work, jobz, uplo, n, a, lda, w);
}

void syev_range(char uplo, int64_t n, float* a, int64_t lda, int64_t il, int64_t iu, float* w,
                float* z, int64_t ldz) {
  syev_range_impl(uplo, n, a, lda, il, iu, w, z, ldz);
}
void syev_range(char uplo, int64_t n, double* a, int64_t lda, int64_t il, int64_t iu, double* w,
                double* z, int64_t ldz) {
  syev_range_impl(uplo, n, a, lda, il, iu, w, z, ldz);
}

namespace {
template <typename T, typename Qr, typename Q>
void orthonormalize_impl(const char* qr_name, Qr qr, const char* q_name, Q q, int64_t m, int64_t n,
                         T* a, int64_t lda) {
  if (n == 0) return;
  std::vector<T> tau(static_cast<size_t>(n));
  T lq = 0;
  lapack_int info = qr(LAPACK_COL_MAJOR, m, n, a, lda, tau.data(), &lq, -1);
  if (info != 0) throw_lapack(qr_name, info, "workspace query");
  T lq2 = 0;
  info = q(LAPACK_COL_MAJOR, m, n, n, a, lda, tau.data(), &lq2, -1);
  if (info != 0) throw_lapack(q_name, info, "workspace query");
  std::vector<T> wk(workspace(std::max(lq, lq2), n));
  info =
      qr(LAPACK_COL_MAJOR, m, n, a, lda, tau.data(), wk.data(), static_cast<lapack_int>(wk.size()));
  if (info != 0) throw_lapack(qr_name, info, nullptr);
  info = q(LAPACK_COL_MAJOR, m, n, n, a, lda, tau.data(), wk.data(),
           static_cast<lapack_int>(wk.size()));
  if (info != 0) throw_lapack(q_name, info, nullptr);
}
}  // namespace

void orthonormalize(int64_t m, int64_t n, float* a, int64_t lda) {
  orthonormalize_impl("sgeqrf", LAPACKE_sgeqrf_work, "sorgqr", LAPACKE_sorgqr_work, m, n, a, lda);
}
void orthonormalize(int64_t m, int64_t n, double* a, int64_t lda) {
  orthonormalize_impl("dgeqrf", LAPACKE_dgeqrf_work, "dorgqr", LAPACKE_dorgqr_work, m, n, a, lda);
}

void potrf(char uplo, int64_t n, float* a, int64_t lda) {
  lapack_int info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, uplo, n, a, lda);
  if (info != 0) throw_lapack("spotrf", info, kNotPd);
}
void potrf(char uplo, int64_t n, double* a, int64_t lda) {
  lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, uplo, n, a, lda);
  if (info != 0) throw_lapack("dpotrf", info, kNotPd);
}

void potrs(char uplo, int64_t n, int64_t nrhs, const float* a, int64_t lda, float* b, int64_t ldb) {
  lapack_int info = LAPACKE_spotrs_work(LAPACK_COL_MAJOR, uplo, n, nrhs, a, lda, b, ldb);
  if (info != 0) throw_lapack("spotrs", info, nullptr);
}
void potrs(char uplo, int64_t n, int64_t nrhs, const double* a, int64_t lda, double* b,
           int64_t ldb) {
  lapack_int info = LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, uplo, n, nrhs, a, lda, b, ldb);
  if (info != 0) throw_lapack("dpotrs", info, nullptr);
}

void gesdd(int64_t m, int64_t n, float* a, int64_t lda, float* s, float* u, int64_t ldu, float* vt,
           int64_t ldvt) {
  gesdd_impl("sgesdd", LAPACKE_sgesdd_work, m, n, a, lda, s, u, ldu, vt, ldvt);
}
void gesdd(int64_t m, int64_t n, double* a, int64_t lda, double* s, double* u, int64_t ldu,
           double* vt, int64_t ldvt) {
  gesdd_impl("dgesdd", LAPACKE_dgesdd_work, m, n, a, lda, s, u, ldu, vt, ldvt);
}

}  // namespace dalr::cpu
