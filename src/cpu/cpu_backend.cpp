#include "dalr/backend.hpp"

namespace dalr {

namespace {

template <typename T>
class CpuStats final : public StatsAccumulator<T> {
 public:
  CpuStats(int64_t n, int64_t m, const Matrix<T>* w, const std::vector<T>* b)
      : st_(n, m), w_(w), b_(b) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    st_.add(x, cols, ldx, w_, b_ ? b_->data() : nullptr, first_index);
  }
  void merge(const LayerStats<T>& earlier) override { st_.merge(earlier); }
  LayerStats<T> result() override { return st_; }
  LayerStats<T> finish() override { return std::move(st_); }  // no n x n copy

 private:
  LayerStats<T> st_;
  const Matrix<T>* w_;
  const std::vector<T>* b_;
};

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::unique_ptr<StatsAccumulator<float>> stats(int64_t n, int64_t m, const Matrix<float>* w,
                                                 const std::vector<float>* b, int64_t) override {
    return std::make_unique<CpuStats<float>>(n, m, w, b);
  }
  std::unique_ptr<StatsAccumulator<double>> stats(int64_t n, int64_t m, const Matrix<double>* w,
                                                  const std::vector<double>* b, int64_t) override {
    return std::make_unique<CpuStats<double>>(n, m, w, b);
  }
  std::unique_ptr<Forward<float>> forward_f32(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CpuForward<float>>(a, w);
  }
  std::unique_ptr<Forward<double>> forward_f64(const Arch& a, const SafetensorsFile& w) override {
    return std::make_unique<CpuForward<double>>(a, w);
  }
  Factors<float> solve(const SolveOptions& o, const Matrix<float>& w, const std::vector<float>& b,
                       const LayerStats<float>& st) override {
    return dalr::solve<float>(o, w, b, st);
  }
  Factors<double> solve(const SolveOptions& o, const Matrix<double>& w,
                        const std::vector<double>& b, const LayerStats<double>& st) override {
    return dalr::solve<double>(o, w, b, st);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace dalr
