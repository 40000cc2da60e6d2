#pragma once
// One interface over the CPU and CUDA backends (CONVENTIONS.md): the job code (compress)
// is written once against it; `make_cpu_backend()` and `dalr::cuda::make_backend()`
// implement it with the same semantics, the CPU being the oracle.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/conv_geometry.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/matrix.hpp"
#include "dalr/precision.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace dalr {

class SafetensorsFile;
class NpyReader;

// Streaming statistics of a layer's inputs (and outputs when m > 0).
template <typename T>
class StatsAccumulator {
 public:
  virtual ~StatsAccumulator() = default;
  // x: n x cols column-major host memory, reusable when the call returns.
  virtual void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) = 0;
  // The device path (opt in: false, and add_device throws, unless a GPU accumulator
  // overrides them). dx: n x cols column-major DEVICE memory, leading dimension ldx,
  // made by work queued on `stream` (a cudaStream_t as void*, on the accumulator's
  // device): the contract of Forward<T>::DeviceTap. Returns without waiting for the
  // GPU. NaN/Inf cannot be rejected before the batch is counted: the first one (lowest
  // sample, then unit) is reported by a later add_device or by result()/finish(), with
  // LayerStats::add's message; the statistics are unusable from then on.
  virtual bool supports_device_add() const { return false; }
  virtual void add_device(const T* /*dx*/, int64_t /*cols*/, int64_t /*ldx*/,
                          int64_t /*first_index*/, void* /*stream*/) {
    throw Error("device batches are not supported by this statistics accumulator (use add)");
  }
  virtual void merge(const LayerStats<T>& earlier) = 0;  // resume from saved statistics
  // The statistics so far; more batches may follow.
  virtual LayerStats<T> result() = 0;
  // The statistics at the end: no batch may follow. Lets the CPU accumulator hand its
  // own over instead of copying n x n values (2.5 to 5 GB at VGG19's fc6).
  virtual LayerStats<T> finish() { return result(); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
  // The device memory free for a job, in bytes; 0 when the backend has no device (the
  // CPU's) or cannot tell. The compress job's memory check compares its estimate with it.
  virtual double available_device_bytes() { return 0; }
  // The precision the backend was made for (its math mode and activation storage); the
  // jobs take their scalar type from it too (with_precision).
  virtual Precision precision() const = 0;
  virtual std::unique_ptr<StatsAccumulator<float>> stats(int64_t n, int64_t m,
                                                         const Matrix<float>* w,
                                                         const std::vector<float>* b,
                                                         int64_t max_batch) = 0;
  virtual std::unique_ptr<StatsAccumulator<double>> stats(int64_t n, int64_t m,
                                                          const Matrix<double>* w,
                                                          const std::vector<double>* b,
                                                          int64_t max_batch) = 0;
  // Statistics of a conv layer's patches (dalr/patches.hpp): add() takes the layer's input
  // feature maps (g.map_size() x images); the statistics have width g.patch_size(), w is
  // the weight as m x patch_size. `tile_cols` patches go to the inner accumulator at once.
  // Not pure: by default the host twin (PatchAccumulator around stats(), defined in
  // src/cpu/cpu_backend.cpp); the CUDA backend overrides it to take device batches too.
  virtual std::unique_ptr<StatsAccumulator<float>> conv_stats(const ConvGeometry& g, int64_t m,
                                                              const Matrix<float>* w,
                                                              const std::vector<float>* b,
                                                              int64_t tile_cols);
  virtual std::unique_ptr<StatsAccumulator<double>> conv_stats(const ConvGeometry& g, int64_t m,
                                                               const Matrix<double>* w,
                                                               const std::vector<double>* b,
                                                               int64_t tile_cols);
  // The network's forward pass on this backend (weights loaded once).
  virtual std::unique_ptr<Forward<float>> forward_f32(const Arch& arch,
                                                      const SafetensorsFile& weights) = 0;
  virtual std::unique_ptr<Forward<double>> forward_f64(const Arch& arch,
                                                       const SafetensorsFile& weights) = 0;
  virtual Factors<float> solve(const SolveOptions& opt, const Matrix<float>& w,
                               const std::vector<float>& b, const LayerStats<float>& st) = 0;
  virtual Factors<double> solve(const SolveOptions& opt, const Matrix<double>& w,
                                const std::vector<double>& b, const LayerStats<double>& st) = 0;
  // The sample-space solve of dalr and dalr-exact from the samples x (n x p, host memory):
  // dalr::solve_dual's semantics. Not pure: by default the CPU twin's (defined in
  // src/cpu/cpu_backend.cpp); the CUDA backend overrides it.
  virtual Factors<float> solve_dual(const SolveOptions& opt, const Matrix<float>& w,
                                    const std::vector<float>& b, const Matrix<float>& x);
  virtual Factors<double> solve_dual(const SolveOptions& opt, const Matrix<double>& w,
                                     const std::vector<double>& b, const Matrix<double>& x);
  // The factors' reconstruction error over the samples behind `st`, from the statistics
  // alone (C, s, p): the CPU's reconstruction_error (src/cpu/recon.hpp), one m x n x n
  // product with C on this backend.
  virtual ReconError reconstruction_error(const LayerStats<float>& st, const Matrix<float>& w,
                                          const std::vector<float>& b, const Factors<float>& f) = 0;
  virtual ReconError reconstruction_error(const LayerStats<double>& st, const Matrix<double>& w,
                                          const std::vector<double>& b,
                                          const Factors<double>& f) = 0;
  // The same error over the samples of an activation file (--acts, --acts-test), read
  // in chunks of `batch` rows on the host. Not pure: by default the CPU twin's (defined
  // in src/cpu/cpu_backend.cpp), which every backend uses for now.
  virtual ReconError reconstruction_error(NpyReader& acts, const Matrix<float>& w,
                                          const std::vector<float>& b, const Factors<float>& f,
                                          int64_t batch);
  virtual ReconError reconstruction_error(NpyReader& acts, const Matrix<double>& w,
                                          const std::vector<double>& b, const Factors<double>& f,
                                          int64_t batch);
  // The same error over samples held in memory (x: n x p, host memory; the dual's kept
  // samples when streaming), in chunks of `batch`. Not pure: the CPU twin's by default.
  virtual ReconError reconstruction_error(const Matrix<float>& x, const Matrix<float>& w,
                                          const std::vector<float>& b, const Factors<float>& f,
                                          int64_t batch);
  virtual ReconError reconstruction_error(const Matrix<double>& x, const Matrix<double>& w,
                                          const std::vector<double>& b, const Factors<double>& f,
                                          int64_t batch);
};

// OpenBLAS's CPU kernels (src/cpu/blas_core.hpp): call first thing in main, before any
// thread starts; may start the program again with the best kernels this CPU runs.
void prepare_cpu_kernels(char** argv);
// The kernel family OpenBLAS uses, e.g. "SkylakeX" (for reports).
std::string cpu_kernel_family();

// The CPU backend at `precision` (its float forward passes store activations as
// act_storage(precision) says). Throws for tf32, a tensor-core mode.
std::unique_ptr<Backend> make_cpu_backend(Precision precision = Precision::Fp64);

template <typename T>
std::unique_ptr<Forward<T>> make_forward(Backend& b, const Arch& arch, const SafetensorsFile& w) {
  if constexpr (sizeof(T) == 8)
    return b.forward_f64(arch, w);
  else
    return b.forward_f32(arch, w);
}

}  // namespace dalr
