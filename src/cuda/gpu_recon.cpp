// dalr::cuda::reconstruction_error: the GPU twin of dalr::reconstruction_error from the
// statistics (src/core/recon.hpp). C, W and the factors go to the device (C stays there
// when the statistics keep it, see device_gram.hpp); W C and D C = W C - A (B C) are
// formed with cuBLAS and their inner products with W and D accumulated in double on the
// device; the O(m) rest (residual2, recon_from) is the CPU's own code on the host.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "common/memory_terms.hpp"
#include "cpu/recon.hpp"
#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "cuda/device_gram.hpp"
#include "cuda/device_ops.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "solver_ops.cuh"

namespace dalr::cuda {

namespace {

namespace dk = dalr::kernels;

template <typename T>
ReconError recon_dense(Ops<T>& ops, const LayerStats<T>& st, const Matrix<T>& w,
                       const std::vector<T>& b, const Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  const cudaStream_t s = ops.stream();
  const std::vector<double>& sx = st.sum_x();  // s = X 1, in double as the CPU reads it
  // C: read in place when the statistics keep it on this device, else uploaded.
  DeviceBuffer<T> d_c;
  const T* c = device_gram(st, ops.device());
  if (!c) {
    d_c = device_matrix<T>(n, n);
    d_c.upload(st.gram().ptr(), d_c.size(), s);
    c = d_c.data();
  }
  DeviceBuffer<T> d_w = device_matrix<T>(m, n);
  DeviceBuffer<T> d_a = device_matrix<T>(m, k), d_b = device_matrix<T>(k, n);
  DeviceBuffer<double> d_s(static_cast<size_t>(n)), d_es(static_cast<size_t>(m));
  d_w.upload(w.ptr(), d_w.size(), s);
  d_a.upload(f.a.ptr(), d_a.size(), s);
  d_b.upload(f.b.ptr(), d_b.size(), s);
  d_s.upload(sx.data(), sx.size(), s);
  auto es_of = [&](const T* e) {  // E s, accumulated in double on the device
    dk::launch_row_dot_double(e, m, n, m, d_s.data(), d_es.data(), s);
    std::vector<double> h(static_cast<size_t>(m));
    d_es.download(h.data(), h.size(), s);
    DALR_CUDA_CHECK(cudaStreamSynchronize(s));
    return std::vector<long double>(h.begin(), h.end());
  };

  // The reference: W C, <W C, W>, W s.
  DeviceBuffer<T> d_wc = device_matrix<T>(m, n);
  ops.symm_right_lower(m, n, c, n, d_w.data(), m, d_wc.data(), m);
  const double ref_quad = ops.dot(d_wc.data(), d_w.data(), m * n);
  const std::vector<double> bv(b.begin(), b.end());
  const double ref2 = residual2(ref_quad, es_of(d_w.data()), bv, st.count());

  // The error: D = W - A B and D C = W C - A (B C), both in place.
  if (k > 0) {
    DeviceBuffer<T> d_bc = device_matrix<T>(k, n);
    ops.symm_right_lower(k, n, c, n, d_b.data(), k, d_bc.data(), k);
    ops.gemm_subtract(m, n, k, d_a.data(), m, d_b.data(), k, d_w.data(), m);
    ops.gemm_subtract(m, n, k, d_a.data(), m, d_bc.data(), k, d_wc.data(), m);
  }
  const double err_quad = ops.dot(d_wc.data(), d_w.data(), m * n);
  std::vector<double> dv(b.begin(), b.end());
  for (int64_t i = 0; i < m; ++i) dv[i] -= static_cast<double>(f.bias[static_cast<size_t>(i)]);
  const double err2 = residual2(err_quad, es_of(d_w.data()), dv, st.count());

  return recon_from(err2, ref2, st.count());
}

// The argument checks, before any device work; true when the error is the CPU's to
// compute (pruning keeps rows of W: the CPU's row updates, as its solve runs on the CPU).
template <typename T>
bool on_the_cpu(const LayerStats<T>& st, const Matrix<T>& w, const std::vector<T>& b,
                const Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  if (st.n() != n || f.b.cols != n || static_cast<int64_t>(b.size()) != m)
    throw Error("reconstruction_error: the statistics (n = " + std::to_string(st.n()) +
                "), the factors (n = " + std::to_string(f.b.cols) + ") or the bias (" +
                std::to_string(b.size()) + ") do not fit a " + std::to_string(m) + " x " +
                std::to_string(n) + " layer");
  if (is_pruning(f.method)) return true;
  if (f.a.rows != m || f.a.cols != k || static_cast<int64_t>(f.bias.size()) != m)
    throw Error("reconstruction_error: the factors do not fit a " + std::to_string(m) + " x " +
                std::to_string(n) + " layer");
  return false;
}

template <typename T>
ReconError recon_on(Context& ctx, const LayerStats<T>& st, const Matrix<T>& w,
                    const std::vector<T>& b, const Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  ctx.make_current();
  // Always exact products, whatever the context's math: the error is a difference of
  // sums of products (D C = W C - A (B C)), and TF32's 5e-4 would swamp errors of a few
  // percent.
  const CublasMathScope exact(ctx.cublas(), cublas_math(Math::Exact));
  // Nothing here uses the workspace: free what a forward pass left (the memory check
  // below then sees what a context of its own would).
  ctx.release_workspace();
  // C (unless the statistics keep it on this device), W (becomes D), W C (becomes D C),
  // A, B, B C, s, W s.
  // (common/memory_terms.cpp, the compress job's memory model's terms too)
  const bool c_there = device_gram(st, ctx.device()) != nullptr;
  require_device_memory(
      saturated_size(total_bytes(gpu_error_terms(m, n, k, c_there, sizeof(T)))),
      "the reconstruction error of a " + std::to_string(m) + " x " + std::to_string(n) + " layer");
  Ops<T> ops(ctx);
  return recon_dense(ops, st, w, b, f);
}

}  // namespace

template <typename T>
ReconError reconstruction_error(const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f, Math math,
                                int device) {
  if (on_the_cpu(st, w, b, f)) return dalr::reconstruction_error(st, w, b, f);
  (void)math;  // always exact (see recon_on)
  Context ctx(device, Math::Exact);
  return recon_on(ctx, st, w, b, f);
}

template <typename T>
ReconError reconstruction_error(Context& ctx, const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f) {
  if (on_the_cpu(st, w, b, f)) return dalr::reconstruction_error(st, w, b, f);
  return recon_on(ctx, st, w, b, f);
}

template ReconError reconstruction_error(const LayerStats<float>&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&, Math,
                                         int);
template ReconError reconstruction_error(const LayerStats<double>&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&, Math,
                                         int);

template ReconError reconstruction_error(Context&, const LayerStats<float>&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&);
template ReconError reconstruction_error(Context&, const LayerStats<double>&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&);

}  // namespace dalr::cuda
