#pragma once
// The dual solve when streaming: a statistics accumulator that keeps a layer's samples
// (X, n x p, on the host) while there are at most `cap` of them, so that the layer can be
// solved in sample space (solve_dual) without ever forming C. The batch that would pass
// `cap` (p passing n, or the memory budget) switches it: the kept samples are replayed,
// in the batches they came in, into the ordinary accumulator (so C, the sums and the
// maxima are exactly the primal's), they are freed, and from then on it is that
// accumulator; the job then solves primal.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "dalr/backend.hpp"

namespace dalr {

template <typename T>
class SampleKeeper final : public StatsAccumulator<T> {
 public:
  using Make = std::function<std::unique_ptr<StatsAccumulator<T>>()>;
  // n: the samples' width; cap: samples kept at most (0: none, the ordinary accumulator
  // from the start); expected: samples to reserve room for (0: grow as they come); make:
  // the ordinary accumulator, called once at the switch.
  SampleKeeper(int64_t n, int64_t cap, int64_t expected, Make make);

  // As LayerStats::add: throws on NaN/Inf naming the sample and unit, before keeping.
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override;
  void merge(const LayerStats<T>& earlier) override;  // switches first: C is needed
  // Keeping: stats_keeping_samples over the samples (a copy for result(), the samples
  // themselves for finish(), which also makes them samples()).
  LayerStats<T> result() override;
  LayerStats<T> finish() override;

  bool keeping() const { return acc_ == nullptr; }
  int64_t switched_at() const { return switched_at_; }  // samples kept at the switch (0: none)
  // The kept samples (n x p), after finish() while keeping; null otherwise.
  std::shared_ptr<const Matrix<T>> samples() const { return done_; }

 private:
  void switch_to_c();
  std::shared_ptr<const Matrix<T>> as_matrix(std::vector<T> values) const;  // n x count_

  struct Batch {
    int64_t cols, first;
  };
  int64_t n_, cap_, count_ = 0;
  Make make_;
  std::vector<T> x_;            // n x count_, column-major
  std::vector<Batch> batches_;  // as they came, replayed at the switch
  std::unique_ptr<StatsAccumulator<T>> acc_;
  std::shared_ptr<const Matrix<T>> done_;
  int64_t switched_at_ = 0;
};

extern template class SampleKeeper<float>;
extern template class SampleKeeper<double>;

}  // namespace dalr
