#pragma once
// The CUDA backend's public face: plain C++, no CUDA headers. Same semantics as the
// CPU twins (LayerStats<T>::add, dalr::solve), which are the oracles in the tests.
// Available only when the library was built with CUDA (DALR_HAVE_CUDA); at run time
// `available()` says whether a device exists.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/backend.hpp"
#include "dalr/matrix.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace dalr::cuda {

// One GPU's streams, library handles and workspace (src/cuda/context.hpp). The CUDA
// backend owns one per device and passes it to everything it makes; the overloads below
// that take a device instead make a context of their own for the call or object.
class Context;

// Number of usable devices; 0 without a device or driver. Never throws.
int device_count() noexcept;
inline bool available() noexcept {
  return device_count() > 0;
}
std::string device_name(int device);

// Precision policy. fp32: float storage and math, cuBLAS pedantic math (no
// reduced-precision reductions, no TF32). tf32: float storage, TF32 tensor-core math
// for the Gram/GEMM products (only when the user asks). fp64: double throughout.
enum class Math { Exact, Tf32 };

// Streaming statistics on the GPU: the twin of LayerStats<T>. Batches arrive from the
// host; add() copies them into one of two pinned buffers and returns, while the upload
// (copy stream) and the SYRK/row-stats update (compute stream) proceed asynchronously,
// ordered by events (no device-wide synchronisation inside the loop).
template <typename T>
class GpuStats {
 public:
  // w (m x n) and b (m) are needed when m > 0 (output statistics); max_batch bounds
  // the columns of one add().
  GpuStats(int64_t n, int64_t m, const Matrix<T>* w, const std::vector<T>* b, int64_t max_batch,
           Math math = Math::Exact, int device = 0);
  // The same on a shared context (its device and math), which the object keeps alive.
  GpuStats(std::shared_ptr<Context> ctx, int64_t n, int64_t m, const Matrix<T>* w,
           const std::vector<T>* b, int64_t max_batch);
  ~GpuStats();
  GpuStats(const GpuStats&) = delete;
  GpuStats& operator=(const GpuStats&) = delete;

  // x: n x cols column-major, leading dimension ldx (host memory, reusable on return).
  // Throws dalr::Error on NaN/Inf with the same message as LayerStats::add.
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index = 0);
  // x: DEVICE memory of this object's device, made by work queued on `stream` (a
  // cudaStream_t): StatsAccumulator<T>::add_device. The block is copied on `stream`
  // before the call returns, so work the producer queues there later may overwrite it;
  // nothing waits for the GPU. NaN/Inf: the first one (lowest sample, then unit) throws
  // LayerStats::add's message from a later add_device() or from result(), after it
  // has been counted: the statistics are unusable from then on (result() keeps throwing).
  // first_index must be >= 0.
  void add_device(const T* x, int64_t cols, int64_t ldx, int64_t first_index, void* stream);
  // Waits for the device and returns the statistics (C symmetric, sums, maxima, count).
  LayerStats<T> result();
  // result() at the end: C also stays on the device, attached to the statistics
  // (LayerStats::DeviceCopy), where cuda::solve and cuda::reconstruction_error on this
  // device read it instead of uploading it. Nothing may follow (add, merge and result
  // throw).
  LayerStats<T> finish();
  // Adds statistics accumulated earlier (resume) before more batches arrive.
  void merge(const LayerStats<T>& earlier);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// dalr::solve on the GPU: uploads W and C once, and the whole solve (GEMMs, syevd,
// Cholesky, SVD) stays on the device; devInfo is checked. Checks the device memory it
// needs before allocating and throws naming the bytes needed and free.
template <typename T>
Factors<T> solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats, Math math = Math::Exact, int device = 0);
// The same on ctx's stream and handles (its device and math). Gives back any workspace
// it grew before returning.
template <typename T>
Factors<T> solve(Context& ctx, const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats);

// dalr::solve_dual on the GPU (on ctx's stream and handles): uploads W and the samples x
// (n x p) once; Z = W X, K = X^T X, the m x m eigensolve and the p x p Cholesky (or
// pseudo-inverse) stay on the device. Checks the device memory it needs first.
template <typename T>
Factors<T> solve_dual(Context& ctx, const SolveOptions& opt, const Matrix<T>& w,
                      const std::vector<T>& b, const Matrix<T>& x);
// Device bytes solve_dual() needs (an upper bound, used for its check).
size_t solve_dual_bytes(int64_t m, int64_t n, int64_t p, int64_t k, size_t elem_size);

// dalr::reconstruction_error from the statistics (src/cpu/recon.hpp) on the GPU: uploads
// C, W and the factors, forms W C and D C = W C - A (B C) with cuBLAS and their inner
// products in double on the device; the O(m) rest on the host. Pruning runs the CPU's
// (as its solve does). Checks the device memory it needs first.
template <typename T>
ReconError reconstruction_error(const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f,
                                Math math = Math::Exact, int device = 0);
// The same on ctx's stream and handles (its device; always exact math, whatever ctx's).
template <typename T>
ReconError reconstruction_error(Context& ctx, const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f);

// The CUDA implementation of dalr::Backend on one device (throws if it does not exist).
// The precision gives the math (Math::Tf32 for tf32, else Exact), which rules the
// statistics, the solve and a float forward pass with 32-bit storage, and the
// activation storage of float forward passes (act_storage: fp16/bf16 run the
// convolutions and linear layers on tensor cores).
std::unique_ptr<Backend> make_backend(int device = 0, Precision precision = Precision::Fp32);

// Device bytes solve() needs for this shape (an upper bound, used for the check above).
size_t solve_bytes(Method method, int64_t m, int64_t n, int64_t k, size_t elem_size);

}  // namespace dalr::cuda
