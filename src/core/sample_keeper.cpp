// The dual solve when streaming (sample_keeper.hpp).
#include "core/sample_keeper.hpp"

#include <algorithm>
#include <utility>

#include "common/finite.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"

namespace dalr {

template <typename T>
SampleKeeper<T>::SampleKeeper(int64_t n, int64_t cap, int64_t expected, Make make)
    : n_(n), cap_(cap), make_(std::move(make)) {
  if (cap_ <= 0) {
    acc_ = make_();
    return;
  }
  // Reserved, not touched: pages become resident only as samples arrive.
  if (expected > 0)
    x_.reserve(static_cast<size_t>(n) * static_cast<size_t>(std::min(expected, cap)));
}

template <typename T>
void SampleKeeper<T>::add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) {
  if (cols <= 0) return;
  if (!acc_ && count_ + cols > cap_) switch_to_c();
  if (acc_) return acc_->add(x, cols, ldx, first_index);
  if (ldx < n_) throw Error("activation batch: leading dimension smaller than the width");
  check_finite(x, n_, cols, ldx, first_index);
  for (int64_t j = 0; j < cols; ++j) x_.insert(x_.end(), x + j * ldx, x + j * ldx + n_);
  batches_.push_back({cols, first_index});
  count_ += cols;
}

template <typename T>
void SampleKeeper<T>::switch_to_c() {
  switched_at_ = count_;
  acc_ = make_();
  int64_t at = 0;
  for (const Batch& b : batches_) {  // the batches as the primal pass saw them
    acc_->add(x_.data() + at * n_, b.cols, n_, b.first);
    at += b.cols;
  }
  std::vector<T>().swap(x_);  // freed, not only emptied
  batches_.clear();
}

template <typename T>
void SampleKeeper<T>::merge(const LayerStats<T>& earlier) {
  if (!acc_) switch_to_c();
  acc_->merge(earlier);
}

template <typename T>
std::shared_ptr<const Matrix<T>> SampleKeeper<T>::as_matrix(std::vector<T> values) const {
  auto x = std::make_shared<Matrix<T>>();
  x->rows = n_;
  x->cols = count_;
  x->data = std::move(values);
  return x;
}

template <typename T>
LayerStats<T> SampleKeeper<T>::result() {
  return acc_ ? acc_->result() : stats_keeping_samples<T>(as_matrix(x_));
}

template <typename T>
LayerStats<T> SampleKeeper<T>::finish() {
  if (acc_) return acc_->finish();
  done_ = as_matrix(std::move(x_));
  return stats_keeping_samples<T>(done_);
}

template class SampleKeeper<float>;
template class SampleKeeper<double>;

}  // namespace dalr
