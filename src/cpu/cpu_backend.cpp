#include <algorithm>
#include <utility>
#include <vector>

#include "common/finite.hpp"
#include "cpu/blas_core.hpp"
#include "cpu/forward.hpp"
#include "cpu/recon.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/patches.hpp"

namespace dalr {

namespace {

// Gathers small batches into one block of up to kCols samples before the SYRK: each
// SYRK reads and writes all of C (2.5 GB at VGG19's fc6), so a batch of 8 images is
// bound by memory bandwidth, a block of 256 by arithmetic. Same statistics up to the
// order of the fp sums; NaN/Inf are still rejected by the add() that brings them.
template <typename T>
class CpuStats final : public StatsAccumulator<T> {
 public:
  CpuStats(int64_t n, int64_t m, const Matrix<T>* w, const std::vector<T>* b)
      : st_(n, m),
        w_(w),
        b_(b),
        cap_(std::clamp<int64_t>(kBytes / (std::max<int64_t>(n, 1) * int64_t{sizeof(T)}), 1,
                                 kCols)) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    if (cols <= 0) return;
    // Not contiguous with what is held, or too big to hold: what is held goes first.
    if (held_ > 0 && (first_index != first_ + held_ || held_ + cols > cap_)) flush();
    if (cols >= cap_) {  // LayerStats::add checks it
      st_.add(x, cols, ldx, w_, b_ ? b_->data() : nullptr, first_index);
      return;
    }
    // Held samples are checked now, so that the add() that brings a NaN rejects it.
    const int64_t n = st_.n();
    if (ldx < n) throw Error("activation batch: leading dimension smaller than the width");
    check_finite(x, n, cols, ldx, first_index);
    if (held_ == 0) first_ = first_index;
    block_.resize(static_cast<size_t>(n * cap_));
    for (int64_t j = 0; j < cols; ++j) std::copy_n(x + j * ldx, n, block_.data() + (held_ + j) * n);
    held_ += cols;
    if (held_ == cap_) flush();
  }
  void merge(const LayerStats<T>& earlier) override { st_.merge(earlier); }
  LayerStats<T> result() override {
    flush();
    return st_;
  }
  LayerStats<T> finish() override {  // no n x n copy
    flush();
    return std::move(st_);
  }

 private:
  static constexpr int64_t kCols = 256;
  static constexpr int64_t kBytes = int64_t{64} << 20;  // at most 64 MiB held

  void flush() {
    if (held_ == 0) return;
    const int64_t cols = std::exchange(held_, 0);
    st_.add(block_.data(), cols, st_.n(), w_, b_ ? b_->data() : nullptr, first_);
  }

  LayerStats<T> st_;
  const Matrix<T>* w_;
  const std::vector<T>* b_;
  const int64_t cap_;     // samples held at most
  std::vector<T> block_;  // n x cap_, column-major
  int64_t held_ = 0, first_ = 0;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Precision precision)
      : precision_(precision), storage_(act_storage(precision)) {}
  std::string name() const override { return "cpu"; }
  Precision precision() const override { return precision_; }
  std::unique_ptr<StatsAccumulator<float>> stats(int64_t n, int64_t m, const Matrix<float>* w,
                                                 const std::vector<float>* b, int64_t) override {
    return std::make_unique<CpuStats<float>>(n, m, w, b);
  }
  std::unique_ptr<StatsAccumulator<double>> stats(int64_t n, int64_t m, const Matrix<double>* w,
                                                  const std::vector<double>* b, int64_t) override {
    return std::make_unique<CpuStats<double>>(n, m, w, b);
  }
  std::unique_ptr<Forward<float>> forward_f32(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CpuForward<float>>(a, w, storage_);
  }
  std::unique_ptr<Forward<double>> forward_f64(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CpuForward<double>>(a, w, storage_);
  }
  Factors<float> solve(const SolveOptions& o, const Matrix<float>& w, const std::vector<float>& b,
                       const LayerStats<float>& st) override {
    return dalr::solve<float>(o, w, b, st);
  }
  Factors<double> solve(const SolveOptions& o, const Matrix<double>& w,
                        const std::vector<double>& b, const LayerStats<double>& st) override {
    return dalr::solve<double>(o, w, b, st);
  }
  using Backend::reconstruction_error;  // the activation-file overloads (the default)
  ReconError reconstruction_error(const LayerStats<float>& st, const Matrix<float>& w,
                                  const std::vector<float>& b, const Factors<float>& f) override {
    return dalr::reconstruction_error(st, w, b, f);
  }
  ReconError reconstruction_error(const LayerStats<double>& st, const Matrix<double>& w,
                                  const std::vector<double>& b, const Factors<double>& f) override {
    return dalr::reconstruction_error(st, w, b, f);
  }

 private:
  Precision precision_;
  ActStorage storage_;
};

}  // namespace

// Backend's default for the error over an activation file: the CPU twin's.
ReconError Backend::reconstruction_error(NpyReader& acts, const Matrix<float>& w,
                                         const std::vector<float>& b, const Factors<float>& f,
                                         int64_t batch) {
  return dalr::reconstruction_error(acts, w, b, f, batch);
}
ReconError Backend::reconstruction_error(NpyReader& acts, const Matrix<double>& w,
                                         const std::vector<double>& b, const Factors<double>& f,
                                         int64_t batch) {
  return dalr::reconstruction_error(acts, w, b, f, batch);
}

ReconError Backend::reconstruction_error(const Matrix<float>& x, const Matrix<float>& w,
                                         const std::vector<float>& b, const Factors<float>& f,
                                         int64_t batch) {
  return dalr::reconstruction_error(x, w, b, f, batch);
}
ReconError Backend::reconstruction_error(const Matrix<double>& x, const Matrix<double>& w,
                                         const std::vector<double>& b, const Factors<double>& f,
                                         int64_t batch) {
  return dalr::reconstruction_error(x, w, b, f, batch);
}

std::unique_ptr<StatsAccumulator<float>> Backend::conv_stats(const ConvGeometry& g, int64_t m,
                                                             const Matrix<float>* w,
                                                             const std::vector<float>* b,
                                                             int64_t tile_cols) {
  return std::make_unique<PatchAccumulator<float>>(stats(g.patch_size(), m, w, b, tile_cols), g,
                                                   tile_cols);
}
std::unique_ptr<StatsAccumulator<double>> Backend::conv_stats(const ConvGeometry& g, int64_t m,
                                                              const Matrix<double>* w,
                                                              const std::vector<double>* b,
                                                              int64_t tile_cols) {
  return std::make_unique<PatchAccumulator<double>>(stats(g.patch_size(), m, w, b, tile_cols), g,
                                                    tile_cols);
}

Factors<float> Backend::solve_dual(const SolveOptions& opt, const Matrix<float>& w,
                                   const std::vector<float>& b, const Matrix<float>& x) {
  return dalr::solve_dual(opt, w, b, x);
}
Factors<double> Backend::solve_dual(const SolveOptions& opt, const Matrix<double>& w,
                                    const std::vector<double>& b, const Matrix<double>& x) {
  return dalr::solve_dual(opt, w, b, x);
}

void prepare_cpu_kernels(char** argv) {
  cpu::use_best_openblas_kernels(argv);
}

std::string cpu_kernel_family() {
  return cpu::openblas_core();
}

std::unique_ptr<Backend> make_cpu_backend(Precision precision) {
  if (uses_tf32(precision))
    throw Error("--precision tf32 needs --device cuda (TF32 is a tensor-core mode)");
  return std::make_unique<CpuBackend>(precision);
}

}  // namespace dalr
