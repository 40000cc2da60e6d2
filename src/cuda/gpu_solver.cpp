// dalr::cuda::solve: the GPU twin of dalr::solve (src/cpu/solver.cpp), step for step.
// W and C are uploaded once; the products (cuBLAS), eigensolves, Cholesky and SVD
// (cuSOLVER's 64-bit X API) stay on the device until A, B and the spectrum come back.
// Only vectors cross the bus in between: eigenvalues of C, to decide on the host, with
// the CPU's own rule, which of them the pseudo-inverse keeps. devInfo is checked after
// every cuSOLVER call. The svd-bc bias and the pruning methods are host work, as on the
// CPU (O(mn) loops over data the host already holds). solve_dual is the twin of the CPU's
// sample-space solve (dalr::solve_dual), from the samples X instead of C.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/memory_terms.hpp"
#include "common/solver_common.hpp"
#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "cuda/device_ops.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "solver_ops.cuh"

namespace dalr::cuda {

namespace {

namespace dk = dalr::kernels;

// (C + lambda I)^-1 by Cholesky when lambda > 0, the pseudo-inverse C^+ through the
// eigendecomposition when lambda == 0 (eigenvalues <= n * eps * max dropped): the
// CPU's RidgeSolve, on the device. lambda was validated by check_solve_arguments.
template <typename T>
class RidgeSolve {
 public:
  // c: C (n x n, lower triangle read) on the device; becomes the factor or eigenvectors.
  // tol_n: the dimension in the pseudo-inverse's cut-off (the dual passes the primal's n).
  RidgeSolve(Ops<T>& ops, DeviceBuffer<T> c, int64_t n, double lambda, int64_t tol_n = -1)
      : ops_(ops), n_(n), lambda_(lambda), f_(std::move(c)) {
    if (tol_n < 0) tol_n = n;
    if (lambda > 0) {
      dk::launch_add_diagonal(f_.data(), n, n, static_cast<T>(lambda), ops.stream());
      ops.potrf(n, f_.data(), n);
      return;
    }
    DeviceBuffer<T> d_w(static_cast<size_t>(n));
    ops.syevd(n, f_.data(), n, d_w.data());
    const std::vector<T> w = ops.download(d_w, n);
    const double wmax = std::max<double>(w.empty() ? 0 : w.back(), 0.0);
    const double tol = wmax * static_cast<double>(tol_n) * std::numeric_limits<T>::epsilon();
    int64_t first = 0;  // eigenvalues ascending: keep [first, n)
    while (first < n && !(static_cast<double>(w[first]) > tol)) ++first;
    first_ = first;
    inv_w_host_.clear();
    for (int64_t i = first; i < n; ++i) inv_w_host_.push_back(T(1) / w[i]);
    inv_w_ = DeviceBuffer<T>(inv_w_host_.size());
    inv_w_.upload(inv_w_host_.data(), inv_w_host_.size(), ops.stream());
  }

  // rhs (n x q, leading dimension n) <- (C + lambda I)^-1 rhs, or C^+ rhs when lambda == 0.
  void apply(T* rhs, int64_t q) {
    if (lambda_ > 0) {
      ops_.potrs(n_, q, f_.data(), n_, rhs, n_);
      return;
    }
    const int64_t r = n_ - first_;
    if (r == 0) {
      DALR_CUDA_CHECK(cudaMemsetAsync(rhs, 0, sizeof(T) * static_cast<size_t>(n_ * q),
                                      ops_.stream()));  // all-zero bits are 0.0
      return;
    }
    const T* vr = f_.data() + first_ * n_;  // eigenvectors of the kept eigenvalues
    tmp_ = device_matrix<T>(r, q);
    ops_.gemm(true, false, r, q, n_, vr, n_, rhs, n_, tmp_.data(), r);  // V_r^T rhs
    dk::launch_scale_rows(tmp_.data(), r, inv_w_.data(), tmp_.data(), r, r, q, ops_.stream());
    ops_.gemm(false, false, n_, q, r, vr, n_, tmp_.data(), r, rhs, n_);  // V_r diag(1/w) ...
  }

 private:
  Ops<T>& ops_;
  int64_t n_;
  double lambda_;
  DeviceBuffer<T> f_;  // Cholesky factor, or eigenvectors
  int64_t first_ = 0;
  std::vector<T> inv_w_host_;  // the host side of inv_w_'s upload
  DeviceBuffer<T> inv_w_, tmp_;
};

// Top-k eigenvectors of the symmetric m x m matrix s (lower triangle read; destroyed)
// into u (m x k), and f->spectrum: all eigenvalues, descending, after the full solver
// (Xsyevd); the top k after the top-k one (Xsyevdx), with the trace's remainder in
// f->spectrum_rest. The CPU's top_eigenvectors, with the same choice of solver.
template <typename T>
void top_eigenvectors(Ops<T>& ops, DeviceBuffer<T>& s, int64_t m, int64_t k, Eigensolver es,
                      DeviceBuffer<T>& u, Factors<T>* f) {
  DeviceBuffer<T> d_w(static_cast<size_t>(m));
  if (use_topk_eigensolver(es, m, k)) {  // subspace, a CPU solver, is Xsyevdx here
    f->eigensolver = "topk";
    // The diagonal (stride m + 1) to the host before the solve destroys it: the trace,
    // summed as the CPU sums it.
    std::vector<T> diag(static_cast<size_t>(m));
    DALR_CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(T), s.data(), sizeof(T) * (m + 1),
                                      sizeof(T), static_cast<size_t>(m), cudaMemcpyDeviceToHost,
                                      ops.stream()));
    ops.syevdx_top(m, k, s.data(), m, d_w.data());  // synchronises the stream
    double trace = 0, top = 0;
    for (T v : diag) trace += double(v);
    // Ascending in columns 0..k-1: column k - 1 - j is the j-th largest.
    dk::launch_reverse_columns(s.data(), m, k - 1, u.data(), m, m, k, ops.stream());
    const std::vector<T> w = ops.download(d_w, k);
    f->spectrum.assign(w.rbegin(), w.rend());
    for (double v : f->spectrum) top += std::max(v, 0.0);
    f->spectrum_rest = std::max(trace - top, 0.0);
    return;
  }
  f->eigensolver = "full";
  ops.syevd(m, s.data(), m, d_w.data());
  // syevd sorts ascending: column m - 1 - j is the j-th largest.
  dk::launch_reverse_columns(s.data(), m, m - 1, u.data(), m, m, k, ops.stream());
  const std::vector<T> w = ops.download(d_w, m);
  f->spectrum.assign(w.rbegin(), w.rend());
}

template <typename T>
void solve_dalr(Ops<T>& ops, const Matrix<T>& w, const LayerStats<T>& st, int64_t k, double lambda,
                bool exact, Eigensolver es, Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols;
  const cudaStream_t s = ops.stream();
  DeviceBuffer<T> d_w = device_matrix<T>(m, n), d_c = device_matrix<T>(n, n);
  d_w.upload(w.ptr(), d_w.size(), s);
  ops.load_gram(st, d_c);  // the ridge below factors it in place: a copy, never the original
  DeviceBuffer<T> d_wc = device_matrix<T>(m, n);  // W C
  ops.symm_right_lower(m, n, d_c.data(), n, d_w.data(), m, d_wc.data(), m);
  // C is not needed after W C (stream order): the ridge factors it in place.
  RidgeSolve<T> ridge(ops, std::move(d_c), n, lambda);
  DeviceBuffer<T> d_u = device_matrix<T>(m, k), d_b = device_matrix<T>(k, n);
  if (!exact) {
    // Eq. 11: U_k from G = W C W^T; B = U_k^T W C (C + lambda I)^-1.
    DeviceBuffer<T> d_g = device_matrix<T>(m, m);
    ops.gemm(false, true, m, m, n, d_wc.data(), m, d_w.data(), m, d_g.data(), m);
    top_eigenvectors(ops, d_g, m, k, es, d_u, &f);
    DeviceBuffer<T> d_bt = device_matrix<T>(n, k);  // C W^T U_k, then B^T
    ops.gemm(true, false, n, k, m, d_wc.data(), m, d_u.data(), m, d_bt.data(), n);
    ridge.apply(d_bt.data(), k);
    ops.transpose(d_bt.data(), n, k, n, d_b.data(), k);
  } else {
    // W_r = W C (C + lambda I)^-1; U_k from W_r (C + lambda I) W_r^T = W C W_r^T.
    DeviceBuffer<T> d_wrt = device_matrix<T>(n, m);  // (W C)^T, becomes W_r^T
    ops.transpose(d_wc.data(), m, n, m, d_wrt.data(), n);
    ridge.apply(d_wrt.data(), m);
    DeviceBuffer<T> d_h = device_matrix<T>(m, m);
    ops.gemm(false, false, m, m, n, d_wc.data(), m, d_wrt.data(), n, d_h.data(), m);
    top_eigenvectors(ops, d_h, m, k, es, d_u, &f);
    // B = (W_r^T U_k)^T = U_k^T W_r, formed directly as op(U_k) op(W_r^T) = U_k^T (W_r^T)^T.
    ops.gemm(true, true, k, n, m, d_u.data(), m, d_wrt.data(), n, d_b.data(), k);
  }
  f.a = Matrix<T>(m, k);
  f.b = Matrix<T>(k, n);
  d_u.download(f.a.ptr(), d_u.size(), s);
  d_b.download(f.b.ptr(), d_b.size(), s);
  DALR_CUDA_CHECK(cudaStreamSynchronize(s));
}

// The CPU's solve_dalr_dual (src/cpu/solver.cpp), on the device: Z = W X, K = X^T X
// (a full GEMM here, SYRK's lower triangle there), G = Z Z^T or H = Z K (K + lambda I)^-1
// Z^T, then B = S^T X^T with S = (K + lambda I)^-1 Z^T U_k.
template <typename T>
void solve_dalr_dual(Ops<T>& ops, const Matrix<T>& w, const Matrix<T>& x, int64_t k, double lambda,
                     bool exact, Eigensolver es, Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, p = x.cols;
  const cudaStream_t s = ops.stream();
  DeviceBuffer<T> d_x = device_matrix<T>(n, p), d_z = device_matrix<T>(m, p);
  {
    DeviceBuffer<T> d_w = device_matrix<T>(m, n);
    d_w.upload(w.ptr(), d_w.size(), s);
    d_x.upload(x.ptr(), d_x.size(), s);
    ops.gemm(false, false, m, p, n, d_w.data(), m, d_x.data(), n, d_z.data(), m);  // Z = W X
  }  // W freed: cudaFree waits for the device, so after the GEMM
  DeviceBuffer<T> d_k = device_matrix<T>(p, p);
  ops.gemm(true, false, p, p, n, d_x.data(), n, d_x.data(), n, d_k.data(), p);  // K = X^T X
  DeviceBuffer<T> d_u = device_matrix<T>(m, k), d_s = device_matrix<T>(p, k);
  DeviceBuffer<T> d_h = device_matrix<T>(m, m);  // G or H
  if (!exact) {
    RidgeSolve<T> ridge(ops, std::move(d_k), p, lambda, n);
    ops.gemm(false, true, m, m, p, d_z.data(), m, d_z.data(), m, d_h.data(), m);  // G = Z Z^T
    top_eigenvectors(ops, d_h, m, k, es, d_u, &f);
    ops.gemm(true, false, p, k, m, d_z.data(), m, d_u.data(), m, d_s.data(), p);  // Z^T U_k
    ridge.apply(d_s.data(), k);
  } else {
    DeviceBuffer<T> d_zt = device_matrix<T>(p, m), d_kzt = device_matrix<T>(p, m);
    ops.transpose(d_z.data(), m, p, m, d_zt.data(), p);
    RidgeSolve<T> ridge(ops, d_k.clone(s), p, lambda, n);
    ridge.apply(d_zt.data(), m);  // (K + lambda I)^-1 Z^T
    ops.gemm(false, false, p, m, p, d_k.data(), p, d_zt.data(), p, d_kzt.data(), p);
    ops.gemm(false, false, m, m, p, d_z.data(), m, d_kzt.data(), p, d_h.data(), m);  // H
    top_eigenvectors(ops, d_h, m, k, es, d_u, &f);
    ops.gemm(false, false, p, k, m, d_zt.data(), p, d_u.data(), m, d_s.data(), p);
  }
  DeviceBuffer<T> d_b = device_matrix<T>(k, n);
  ops.gemm(true, true, k, n, p, d_s.data(), p, d_x.data(), n, d_b.data(), k);  // S^T X^T
  f.a = Matrix<T>(m, k);
  f.b = Matrix<T>(k, n);
  d_u.download(f.a.ptr(), d_u.size(), s);
  d_b.download(f.b.ptr(), d_b.size(), s);
  DALR_CUDA_CHECK(cudaStreamSynchronize(s));
}

template <typename T>
void solve_svd(Ops<T>& ops, const Matrix<T>& w, int64_t k, Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, r = std::min(m, n), big = std::max(m, n);
  const cudaStream_t s = ops.stream();
  // cuSOLVER's gesvd needs rows >= cols: for a wide W decompose X = W^T (n x m) instead.
  const bool wide = m < n;
  DeviceBuffer<T> d_w = device_matrix<T>(m, n), d_x;
  d_w.upload(w.ptr(), d_w.size(), s);
  if (wide) {
    d_x = device_matrix<T>(n, m);
    ops.transpose(d_w.data(), m, n, m, d_x.data(), n);
  } else {
    d_x = std::move(d_w);
  }
  DeviceBuffer<T> d_s(static_cast<size_t>(r)), d_u = device_matrix<T>(big, r),
                                               d_vt = device_matrix<T>(r, r);
  ops.gesvd(big, r, d_x.data(), big, d_s.data(), d_u.data(), big, d_vt.data(), r);  // X = U S VT
  DeviceBuffer<T> d_a = device_matrix<T>(m, k), d_b = device_matrix<T>(k, n);
  if (!wide) {
    // W = U S VT: A = U(:, 0:k), B = diag(s_k) VT(0:k, :).
    DALR_CUDA_CHECK(cudaMemcpyAsync(d_a.data(), d_u.data(), d_a.bytes(), cudaMemcpyDeviceToDevice,
                                    s));  // leading columns of U (ldu = m) are contiguous
    dk::launch_scale_rows(d_vt.data(), r, d_s.data(), d_b.data(), k, k, n, s);
  } else {
    // W = X^T = VT^T S U^T: A = VT(0:k, :)^T, B = diag(s_k) U(:, 0:k)^T.
    ops.transpose(d_vt.data(), k, m, r, d_a.data(), m);
    ops.transpose(d_u.data(), n, k, n, d_b.data(), k);
    dk::launch_scale_rows(d_b.data(), k, d_s.data(), d_b.data(), k, k, n, s);
  }
  f.a = Matrix<T>(m, k);
  f.b = Matrix<T>(k, n);
  d_a.download(f.a.ptr(), d_a.size(), s);
  d_b.download(f.b.ptr(), d_b.size(), s);
  const std::vector<T> sv = ops.download(d_s, r);  // synchronises the stream
  f.spectrum.resize(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) f.spectrum[i] = double(sv[i]) * double(sv[i]);
}

// A method's name for a message, or its number when it is none of the enum's values.
std::string method_label(Method method) {
  switch (method) {
    case Method::Dalr:
    case Method::DalrExact:
    case Method::Svd:
    case Method::SvdBc:
    case Method::PruneMean:
    case Method::PruneMax:
      return method_name(method);
  }
  return "#" + std::to_string(static_cast<int>(method));
}

std::string job_name(Method method, int64_t m, int64_t n, int64_t k) {
  return "the " + method_label(method) + " solve of a " + std::to_string(m) + " x " +
         std::to_string(n) + " layer at rank " + std::to_string(k);
}

}  // namespace

size_t solve_bytes(Method method, int64_t m, int64_t n, int64_t k, size_t elem_size) {
  // The terms (common/memory_terms.cpp) are the compress job's memory model's too.
  return saturated_size(total_bytes(gpu_solve_terms(method, m, n, k, elem_size)));
}

size_t solve_dual_bytes(int64_t m, int64_t n, int64_t p, int64_t k, size_t elem_size) {
  return saturated_size(total_bytes(gpu_solve_dual_terms(m, n, p, k, elem_size)));
}

namespace {

// Frees the context's workspace when a solve starts and however it ends, so that a solve
// on the backend's long-lived context holds device memory only while it runs, as the
// context of its own that it once made did (and finds the same free memory first).
class WorkspaceScope {
 public:
  explicit WorkspaceScope(Context& ctx) : ctx_(ctx) { ctx_.release_workspace(); }
  ~WorkspaceScope() {
    try {
      ctx_.release_workspace();
    } catch (const std::exception&) {
      // A failed synchronisation: the stream's error surfaces at its next checked call.
    }
  }
  WorkspaceScope(const WorkspaceScope&) = delete;
  WorkspaceScope& operator=(const WorkspaceScope&) = delete;

 private:
  Context& ctx_;
};

// solve() after the argument checks, for a method that runs on the GPU.
template <typename T>
Factors<T> solve_on(Context& ctx, const SolveOptions& opt, const Matrix<T>& w,
                    const LayerStats<T>& stats, const std::vector<T>& b) {
  const int64_t m = w.rows, n = w.cols, k = opt.rank;
  ctx.make_current();
  const WorkspaceScope workspace(ctx);
  require_device_memory(solve_bytes(opt.method, m, n, k, sizeof(T)), job_name(opt.method, m, n, k));
  Ops<T> ops(ctx);

  Factors<T> f = dalr::detail::start_factors(opt, b);
  // Every method named, no default: a new one is a compiler warning here (-Wswitch), and
  // a value outside the enum reaches the throw instead of returning empty factors.
  switch (opt.method) {
    case Method::Dalr:
    case Method::DalrExact:
      solve_dalr(ops, w, stats, k, opt.lambda, opt.method == Method::DalrExact, opt.eigensolver, f);
      f.energy_kept = dalr::detail::energy_fraction(f.spectrum, k, f.spectrum_rest);
      return f;
    case Method::Svd:
    case Method::SvdBc:
      solve_svd(ops, w, k, f);
      if (opt.method == Method::SvdBc) dalr::detail::compensate_bias(w, stats, f);
      f.energy_kept = dalr::detail::energy_fraction(f.spectrum, k);
      return f;
    case Method::PruneMean:
    case Method::PruneMax:
      break;  // the CPU's (solve() returned before calling here)
  }
  throw Error(std::string("the GPU solver has no method '") + method_label(opt.method) + "'");
}

}  // namespace

template <typename T>
Factors<T> solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats, Math math, int device) {
  dalr::detail::check_solve_arguments(opt, w, b, stats);
  // Pruning ranks units by their mean or max activation: a sort on the host, nothing for
  // a GPU to do. The CPU solver is the implementation (and needs no device).
  if (is_pruning(opt.method)) return dalr::solve(opt, w, b, stats);
  Context ctx(device, math);  // throws dalr::Error when the device does not exist
  return solve_on(ctx, opt, w, stats, b);
}

template <typename T>
Factors<T> solve(Context& ctx, const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats) {
  dalr::detail::check_solve_arguments(opt, w, b, stats);
  if (is_pruning(opt.method)) return dalr::solve(opt, w, b, stats);  // as above
  return solve_on(ctx, opt, w, stats, b);
}

template <typename T>
Factors<T> solve_dual(Context& ctx, const SolveOptions& opt, const Matrix<T>& w,
                      const std::vector<T>& b, const Matrix<T>& x) {
  dalr::detail::check_dual_arguments(opt, w, b, x);
  const int64_t m = w.rows, n = w.cols, p = x.cols, k = opt.rank;
  ctx.make_current();
  const WorkspaceScope workspace(ctx);
  require_device_memory(solve_dual_bytes(m, n, p, k, sizeof(T)),
                        "the sample-space " + job_name(opt.method, m, n, k).substr(4) + " over " +
                            std::to_string(p) + " samples");
  Ops<T> ops(ctx);
  Factors<T> f = dalr::detail::start_factors(opt, b);
  solve_dalr_dual(ops, w, x, k, opt.lambda, opt.method == Method::DalrExact, opt.eigensolver, f);
  f.energy_kept = dalr::detail::energy_fraction(f.spectrum, k, f.spectrum_rest);
  return f;
}

template Factors<float> solve_dual(Context&, const SolveOptions&, const Matrix<float>&,
                                   const std::vector<float>&, const Matrix<float>&);
template Factors<double> solve_dual(Context&, const SolveOptions&, const Matrix<double>&,
                                    const std::vector<double>&, const Matrix<double>&);
template Factors<float> solve(const SolveOptions&, const Matrix<float>&, const std::vector<float>&,
                              const LayerStats<float>&, Math, int);
template Factors<double> solve(const SolveOptions&, const Matrix<double>&,
                               const std::vector<double>&, const LayerStats<double>&, Math, int);
template Factors<float> solve(Context&, const SolveOptions&, const Matrix<float>&,
                              const std::vector<float>&, const LayerStats<float>&);
template Factors<double> solve(Context&, const SolveOptions&, const Matrix<double>&,
                               const std::vector<double>&, const LayerStats<double>&);

}  // namespace dalr::cuda
