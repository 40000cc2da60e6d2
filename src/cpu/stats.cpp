#include "dalr/stats.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "common/finite.hpp"
#include "cpu/lapack.hpp"
#include "cpu/row_stats.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr {

namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The first value of a statistic that may not be there: NaN or Inf, except -Inf in the
// maxima (their value before any sample; harmless, and a resumed count may follow it). Returns ""
// when all are fine, else "holds Inf at index I".
template <typename V>
std::string bad_value(const std::vector<V>& v, bool neg_inf_ok) {
  for (size_t i = 0; i < v.size(); ++i) {
    const double x = static_cast<double>(v[i]);
    if (std::isfinite(x) || (neg_inf_ok && x == kNegInf)) continue;
    return std::string("holds ") +
           (std::isnan(x) ? "NaN"
            : x > 0       ? "Inf"
                          : "-Inf") +
           " at index " + std::to_string(i);
  }
  return "";
}

// Calls report(name, what) for the first tensor of a statistics file with a bad value.
template <typename T, typename F>
void check_stats_values(const Matrix<T>& gram, const std::vector<double>& sum_x,
                        const std::vector<double>& max_x, const std::vector<double>& sum_y,
                        const std::vector<double>& max_y, F&& report) {
  const std::pair<const char*, std::string> checks[] = {{"gram", bad_value(gram.data, false)},
                                                        {"sum_x", bad_value(sum_x, false)},
                                                        {"max_x", bad_value(max_x, true)},
                                                        {"sum_y", bad_value(sum_y, false)},
                                                        {"max_y", bad_value(max_y, true)}};
  for (const auto& [name, what] : checks)
    if (!what.empty()) report(name, what);
}

template <typename T>
const char* precision_name() {
  return sizeof(T) == 8 ? "fp64" : "fp32";
}

}  // namespace

template <typename T>
LayerStats<T>::LayerStats(int64_t n, int64_t m)
    : n_(n),
      m_(m),
      gram_(n, n),
      sum_x_(static_cast<size_t>(n), 0.0),
      max_x_(static_cast<size_t>(n), kNegInf),
      sum_y_(static_cast<size_t>(m), 0.0),
      max_y_(static_cast<size_t>(m), kNegInf) {
  if (n <= 0 || m < 0) throw Error("statistics need a positive input width");
}

template <typename T>
LayerStats<T> LayerStats<T>::with_sums(int64_t count, int64_t n, std::vector<double> sum_x,
                                       std::vector<double> max_x, std::vector<double> sum_y,
                                       std::vector<double> max_y) {
  const int64_t m = static_cast<int64_t>(sum_y.size());
  if (n <= 0 || static_cast<int64_t>(sum_x.size()) != n ||
      static_cast<int64_t>(max_x.size()) != n || static_cast<int64_t>(max_y.size()) != m ||
      count < 0)
    throw Error("statistics parts have inconsistent shapes");
  LayerStats s;
  s.n_ = n;
  s.m_ = m;
  s.count_ = count;
  s.sum_x_ = std::move(sum_x);
  s.max_x_ = std::move(max_x);
  s.sum_y_ = std::move(sum_y);
  s.max_y_ = std::move(max_y);
  return s;
}

template <typename T>
LayerStats<T> LayerStats<T>::from_parts(int64_t count, Matrix<T> gram, std::vector<double> sum_x,
                                        std::vector<double> max_x, std::vector<double> sum_y,
                                        std::vector<double> max_y) {
  if (gram.cols != gram.rows) throw Error("statistics parts have inconsistent shapes");
  LayerStats s = with_sums(count, gram.rows, std::move(sum_x), std::move(max_x), std::move(sum_y),
                           std::move(max_y));
  s.gram_ = std::move(gram);
  s.symmetric_ = false;  // re-fill the upper triangle from the lower on first use
  return s;
}

template <typename T>
LayerStats<T> LayerStats<T>::from_device(int64_t count, int64_t n,
                                         std::shared_ptr<const DeviceCopy> device,
                                         std::vector<double> sum_x, std::vector<double> max_x,
                                         std::vector<double> sum_y, std::vector<double> max_y) {
  if (!device) throw Error("statistics parts have inconsistent shapes");
  LayerStats s =
      with_sums(count, n, std::move(sum_x), std::move(max_x), std::move(sum_y), std::move(max_y));
  s.device_ = std::move(device);
  s.host_missing_ = true;
  return s;
}

template <typename T>
void LayerStats<T>::attach_device_copy(std::shared_ptr<const DeviceCopy> copy) {
  materialize();  // a C that only the old copy held comes to the host first
  device_ = std::move(copy);
}

template <typename T>
void LayerStats<T>::materialize() const {
  if (!host_missing_) return;
  if (!device_) throw Error("internal: statistics whose C is neither on the host nor a device");
  Matrix<T> g(n_, n_);
  device_->download(g.ptr());
  gram_ = std::move(g);
  symmetric_ = false;  // the device holds the lower triangle
  host_missing_ = false;
}

template <typename T>
void LayerStats<T>::add(const T* x, int64_t cols, int64_t ldx, const Matrix<T>* w, const T* b,
                        int64_t first_index) {
  if (cols <= 0) return;
  if (ldx < n_) throw Error("activation batch: leading dimension smaller than the width");
  check_finite(x, n_, cols, ldx, first_index);
  materialize();
  device_.reset();  // C changes: a device copy of it is stale
  // C += X X^T, lower triangle (the same call as cublas<t>syrk on the GPU).
  cpu::syrk(CblasLower, CblasNoTrans, n_, cols, T(1), x, ldx, T(1), gram_.ptr(), gram_.ld());
  symmetric_ = false;
  cpu::row_sum_max(x, n_, cols, ldx, static_cast<const T*>(nullptr), false, sum_x_.data(),
                   max_x_.data());
  if (m_ > 0) {
    if (!w || !b || w->rows != m_ || w->cols != n_)
      throw Error("output statistics need the layer's weight (m x n) and bias");
    y_scratch_.resize(static_cast<size_t>(m_ * cols));
    cpu::gemm(CblasNoTrans, CblasNoTrans, m_, cols, n_, T(1), w->ptr(), w->ld(), x, ldx, T(0),
              y_scratch_.data(), m_);
    cpu::row_sum_max(y_scratch_.data(), m_, cols, m_, b, true, sum_y_.data(), max_y_.data());
  }
  count_ += cols;
}

template <typename T>
void LayerStats<T>::merge(const LayerStats& o) {
  if (o.n_ != n_ || o.m_ != m_)
    throw Error("cannot merge statistics of different shapes (n " + std::to_string(n_) + " vs " +
                std::to_string(o.n_) + ", m " + std::to_string(m_) + " vs " + std::to_string(o.m_) +
                ")");
  const Matrix<T>& og = o.gram();
  materialize();
  device_.reset();
  for (int64_t j = 0; j < n_; ++j)
    for (int64_t i = j; i < n_; ++i) gram_(i, j) += og(i, j);
  symmetric_ = false;
  for (size_t i = 0; i < sum_x_.size(); ++i) {
    sum_x_[i] += o.sum_x_[i];
    max_x_[i] = std::max(max_x_[i], o.max_x_[i]);
  }
  for (size_t i = 0; i < sum_y_.size(); ++i) {
    sum_y_[i] += o.sum_y_[i];
    max_y_[i] = std::max(max_y_[i], o.max_y_[i]);
  }
  count_ += o.count_;
}

template <typename T>
bool LayerStats<T>::DeviceCopy::sum_to_root(Communicator& comm) const {
  return comm.sum_to_root_device(static_cast<T*>(nullptr), 0, -1);
}

template <typename T>
void LayerStats<T>::reduce_to_root(Communicator& comm) {
  // C on the GPUs is summed there when all ranks' is (NCCL), and stays there for the solve.
  // Every rank takes part in the choice, one whose C is on the host saying it cannot.
  const bool on_devices = host_missing_ && device_
                              ? device_->sum_to_root(comm)
                              : comm.sum_to_root_device(static_cast<T*>(nullptr), 0, -1);
  if (!on_devices && comm.size() == 1) return;
  if (!on_devices) {
    materialize();
    device_.reset();
    // Only the lower triangle is meaningful (SYRK's); the upper is re-filled from the sum.
    comm.sum_to_root(gram_.ptr(), gram_.size());
    symmetric_ = false;
  }
  comm.sum_to_root(sum_x_.data(), n_);
  comm.max_to_root(max_x_.data(), n_);
  comm.sum_to_root(sum_y_.data(), m_);
  comm.max_to_root(max_y_.data(), m_);
  comm.sum_to_root(&count_, 1);
}

template <typename T>
const Matrix<T>& LayerStats<T>::gram() const {
  materialize();
  if (!symmetric_) {
    for (int64_t j = 0; j < n_; ++j)
      for (int64_t i = j + 1; i < n_; ++i) gram_(j, i) = gram_(i, j);
    symmetric_ = true;
  }
  return gram_;
}

template <typename T>
std::vector<double> LayerStats<T>::mean_x() const {
  std::vector<double> out(sum_x_);
  for (auto& v : out) v /= static_cast<double>(count_ > 0 ? count_ : 1);
  return out;
}

template <typename T>
std::vector<double> LayerStats<T>::mean_y() const {
  std::vector<double> out(sum_y_);
  for (auto& v : out) v /= static_cast<double>(count_ > 0 ? count_ : 1);
  return out;
}

template <typename T>
double LayerStats<T>::gram_trace() const {
  if (host_missing_) return device_->trace();
  double t = 0;
  for (int64_t i = 0; i < n_; ++i) t += static_cast<double>(gram_(i, i));
  return t;
}

template <typename T>
void LayerStats<T>::save(const std::string& path,
                         const std::map<std::string, std::string>& extra) const {
  std::map<std::string, std::string> meta = extra;
  meta["dalr.kind"] = "stats";
  meta["dalr.count"] = std::to_string(count_);
  meta["dalr.precision"] = precision_name<T>();
  const Matrix<T>& g = gram();  // symmetric, so its storage order does not matter
  check_stats_values(g, sum_x_, max_x_, sum_y_, max_y_,
                     [&](const char* name, const std::string& what) {
                       throw Error("cannot save statistics to " + path + ": tensor '" + name +
                                   "' " + what + ": the sums overflowed in " + precision_name<T>() +
                                   "; use --precision fp64 or scale the activations down");
                     });
  std::vector<TensorOut> ts;
  ts.push_back(
      TensorOut::convert("gram", {n_, n_}, g.data, sizeof(T) == 8 ? DType::F64 : DType::F32));
  ts.push_back(TensorOut::f64("sum_x", {n_}, sum_x_));
  ts.push_back(TensorOut::f64("max_x", {n_}, max_x_));
  if (m_ > 0) {
    ts.push_back(TensorOut::f64("sum_y", {m_}, sum_y_));
    ts.push_back(TensorOut::f64("max_y", {m_}, max_y_));
  }
  write_safetensors(path, ts, meta);
}

namespace {

// The sample count as save() writes it: decimal digits only, no sign, no fraction, no
// exponent, within int64 (stoll took "-5", "1e99" as 1 and "600.5" as 600).
int64_t parse_count(const std::string& path, const std::string& text) {
  int64_t n = 0;
  bool ok = !text.empty() && text.size() <= 19;
  for (char ch : text) {
    if (!ok || ch < '0' || ch > '9' || __builtin_mul_overflow(n, 10, &n) ||
        __builtin_add_overflow(n, ch - '0', &n)) {
      ok = false;
      break;
    }
  }
  if (!ok)
    throw Error(path + ": metadata dalr.count '" + text.substr(0, 40) +
                "' is not a sample count (a non-negative whole number)");
  return n;
}

}  // namespace

template <typename T>
LayerStats<T> LayerStats<T>::load(const std::string& path,
                                  std::map<std::string, std::string>* meta) {
  SafetensorsFile f(path);
  auto kind = f.metadata().find("dalr.kind");
  if (kind == f.metadata().end() || kind->second != "stats")
    throw Error(path + " is not a dalr-gpu statistics file (no dalr.kind=stats metadata)");
  const TensorInfo& g = f.at("gram");
  if (g.shape.size() != 2 || g.shape[0] != g.shape[1] || g.shape[0] <= 0)
    throw Error(path + ": tensor 'gram' must be square");
  const int64_t n = g.shape[0];
  const TensorInfo* sy = f.find("sum_y");
  const int64_t m = sy && !sy->shape.empty() ? sy->shape[0] : 0;
  LayerStats s(n, m);
  auto load_vec = [&](const char* name, int64_t len, std::vector<double>& dst) {
    std::vector<double> v = f.read_f64(name);
    if (static_cast<int64_t>(v.size()) != len)
      throw Error(path + ": tensor '" + name + "' has " + std::to_string(v.size()) +
                  " values, expected " + std::to_string(len));
    dst = std::move(v);
  };
  std::vector<T> gv = f.read<T>("gram");
  s.gram_.data = std::move(gv);
  load_vec("sum_x", n, s.sum_x_);
  load_vec("max_x", n, s.max_x_);
  if (m > 0) {
    load_vec("sum_y", m, s.sum_y_);
    load_vec("max_y", m, s.max_y_);
  }
  auto c = f.metadata().find("dalr.count");
  if (c == f.metadata().end()) throw Error(path + ": metadata dalr.count is missing");
  s.count_ = parse_count(path, c->second);
  check_stats_values(s.gram_, s.sum_x_, s.max_x_, s.sum_y_, s.max_y_,
                     [&](const char* name, const std::string& what) {
                       throw Error(path + ": tensor '" + name + "' " + what +
                                   ": statistics must be finite (the run that saved them "
                                   "overflowed, or the file is damaged)");
                     });
  if (meta) *meta = f.metadata();
  return s;
}

template class LayerStats<float>;
template class LayerStats<double>;

}  // namespace dalr
