#include <memory>

#include "cuda/context.hpp"
#include "cuda/gpu_patch_stats.hpp"
#include "dalr/cuda.hpp"
#include "dalr/cudnn_forward.hpp"
#include "dalr/error.hpp"

namespace dalr::cuda {

namespace {

template <typename T>
class CudaStats final : public StatsAccumulator<T> {
 public:
  CudaStats(std::shared_ptr<Context> ctx, int64_t n, int64_t m, const Matrix<T>* w,
            const std::vector<T>* b, int64_t max_batch)
      : gs_(std::move(ctx), n, m, w, b, max_batch) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    gs_.add(x, cols, ldx, first_index);
  }
  bool supports_device_add() const override { return true; }
  void add_device(const T* dx, int64_t cols, int64_t ldx, int64_t first_index,
                  void* stream) override {
    gs_.add_device(dx, cols, ldx, first_index, stream);
  }
  void merge(const LayerStats<T>& earlier) override { gs_.merge(earlier); }
  LayerStats<T> result() override { return gs_.result(); }
  LayerStats<T> finish() override { return gs_.finish(); }

 private:
  GpuStats<T> gs_;
};

// Owns the device's one Context (made on first use) and hands it to everything it makes:
// the statistics and forward passes share it (and keep it alive), the solves and errors
// run on it. Single-threaded, as the jobs drive it.
class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, Precision precision)
      : device_(device),
        precision_(precision),
        math_(uses_tf32(precision) ? Math::Tf32 : Math::Exact),
        storage_(act_storage(precision)),
        name_("cuda:" + std::to_string(device) + " (" + device_name(device) + ")") {}
  std::string name() const override { return name_; }
  double available_device_bytes() override {
    context()->make_current();  // the context's own memory is taken by then
    size_t free_b = 0, total_b = 0;
    Context::memory(&free_b, &total_b);
    return double(free_b);
  }
  Precision precision() const override { return precision_; }
  std::unique_ptr<StatsAccumulator<float>> stats(int64_t n, int64_t m, const Matrix<float>* w,
                                                 const std::vector<float>* b,
                                                 int64_t max_batch) override {
    return std::make_unique<CudaStats<float>>(context(), n, m, w, b, max_batch);
  }
  std::unique_ptr<StatsAccumulator<double>> stats(int64_t n, int64_t m, const Matrix<double>* w,
                                                  const std::vector<double>* b,
                                                  int64_t max_batch) override {
    return std::make_unique<CudaStats<double>>(context(), n, m, w, b, max_batch);
  }
  // Tiles of patches cut on the device (cuda/gpu_patch_stats.hpp), from host maps or
  // from feature maps the GPU forward pass hands over (add_device).
  std::unique_ptr<StatsAccumulator<float>> conv_stats(const ConvGeometry& g, int64_t m,
                                                      const Matrix<float>* w,
                                                      const std::vector<float>* b,
                                                      int64_t tile_cols) override {
    return make_patch_stats<float>(context(), g, m, w, b, tile_cols);
  }
  std::unique_ptr<StatsAccumulator<double>> conv_stats(const ConvGeometry& g, int64_t m,
                                                       const Matrix<double>* w,
                                                       const std::vector<double>* b,
                                                       int64_t tile_cols) override {
    return make_patch_stats<double>(context(), g, m, w, b, tile_cols);
  }
  std::unique_ptr<Forward<float>> forward_f32(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CudnnForward<float>>(a, w, context(), storage_);
  }
  std::unique_ptr<Forward<double>> forward_f64(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CudnnForward<double>>(a, w, context(), storage_);
  }
  Factors<float> solve(const SolveOptions& o, const Matrix<float>& w, const std::vector<float>& b,
                       const LayerStats<float>& st) override {
    return cuda::solve<float>(*context(), o, w, b, st);
  }
  Factors<double> solve(const SolveOptions& o, const Matrix<double>& w,
                        const std::vector<double>& b, const LayerStats<double>& st) override {
    return cuda::solve<double>(*context(), o, w, b, st);
  }
  Factors<float> solve_dual(const SolveOptions& o, const Matrix<float>& w,
                            const std::vector<float>& b, const Matrix<float>& x) override {
    return cuda::solve_dual<float>(*context(), o, w, b, x);
  }
  Factors<double> solve_dual(const SolveOptions& o, const Matrix<double>& w,
                             const std::vector<double>& b, const Matrix<double>& x) override {
    return cuda::solve_dual<double>(*context(), o, w, b, x);
  }
  using Backend::reconstruction_error;  // the activation-file overloads (the default)
  ReconError reconstruction_error(const LayerStats<float>& st, const Matrix<float>& w,
                                  const std::vector<float>& b, const Factors<float>& f) override {
    return cuda::reconstruction_error<float>(*context(), st, w, b, f);
  }
  ReconError reconstruction_error(const LayerStats<double>& st, const Matrix<double>& w,
                                  const std::vector<double>& b, const Factors<double>& f) override {
    return cuda::reconstruction_error<double>(*context(), st, w, b, f);
  }

 private:
  const std::shared_ptr<Context>& context() {
    if (!ctx_) ctx_ = std::make_shared<Context>(device_, math_);
    return ctx_;
  }

  int device_;
  Precision precision_;
  Math math_;
  ActStorage storage_;
  std::string name_;
  std::shared_ptr<Context> ctx_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(int device, Precision precision) {
  const int count = device_count();
  if (device < 0 || device >= count)
    throw Error("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(count) + " found; use --device cpu)");
  return std::make_unique<CudaBackend>(device, precision);
}

}  // namespace dalr::cuda
