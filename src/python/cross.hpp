#pragma once
// dalr.CrossStats' engine side (src/python/module.cpp binds it): the cross statistics
// K = X X^^T of one layer for the asymmetric fit (dalr/asymmetric.hpp), from pairs of
// batches, the layer's inputs in the original network (X) and in the compressed one (X^),
// through Backend::cross_stats (host memory). Rows of an fc layer's inputs, or a conv
// layer's input feature maps cut into patches with the geometry of its ConvStats.
#include <nanobind/nanobind.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "dalr/asymmetric.hpp"
#include "python/stats.hpp"

namespace dalr::python {

class CrossStats {
 public:
  CrossStats(int64_t n, const std::string& precision, const std::string& device)
      : device_(parse_device(device)), precision_(parse_precision(precision, device_.cpu)), n_(n) {
    if (n < 1)
      throw Error("CrossStats: the width n must be at least 1 (got " + std::to_string(n) + ")");
    backend_ = make_backend(device_, precision_);
    if (uses_double(precision_))
      part_ = Part<double>{};
    else
      part_ = Part<float>{};
  }
  // As Stats::set_conv: pairs of feature maps then, cut into patches of this geometry.
  void set_conv(int64_t channels, int64_t kernel_h, int64_t kernel_w, int64_t stride, int64_t pad,
                int64_t dilation) {
    if (count_ > 0 || conv_)
      throw Error("set_conv: the cross statistics already hold samples or a convolution");
    conv_ = conv_without_size(channels, kernel_h, kernel_w, stride, pad, dilation, n_);
  }

  int64_t n() const { return n_; }
  int64_t count() const { return count_; }
  int64_t images() const { return images_; }
  bool is_double() const { return uses_double(precision_); }
  std::string precision() const { return precision_name(precision_); }
  std::string device() const { return device_.name(); }

  // x (original) and xh (compressed network): (rows, n) C-contiguous host arrays.
  template <typename T>
  void add_host(const HostRows<T>& x, const HostRows<T>& xh) {
    if (conv_)
      throw Error("these are a conv layer's cross statistics: add feature maps (images, C, H, W)");
    check_pair(x, xh, 2);
    if (static_cast<int64_t>(x.shape(1)) != n_)
      throw Error("activation batch has " + std::to_string(x.shape(1)) +
                  " features, the cross statistics " + std::to_string(n_));
    auto& p = part<T>();
    if (!p.acc) p.acc = make<T>(nullptr);
    const int64_t rows = static_cast<int64_t>(x.shape(0));
    {
      nanobind::gil_scoped_release release;
      for (int64_t j = 0; j < rows; j += kChunk)
        p.acc->add(x.data() + j * n_, xh.data() + j * n_, std::min(kChunk, rows - j), n_);
    }
    count_ += rows;
  }
  // x and xh: (images, C, H, W) C-contiguous host arrays of the same shape (set_conv).
  template <typename T>
  void add_maps(const HostMaps<T>& x, const HostMaps<T>& xh) {
    if (!conv_)
      throw Error(
          "feature maps (images, C, H, W) go to a conv layer's cross statistics; these take "
          "rows of " +
          std::to_string(n_) + " features");
    check_pair(x, xh, 4);
    if (static_cast<int64_t>(x.shape(1)) != conv_->channels)
      throw Error("the feature maps have " + std::to_string(x.shape(1)) +
                  " channels, the convolution takes " + std::to_string(conv_->channels));
    auto& p = part<T>();
    const auto h = static_cast<int64_t>(x.shape(2)), w = static_cast<int64_t>(x.shape(3));
    if (!p.acc || h != conv_->height || w != conv_->width) {
      ConvGeometry g = *conv_;
      g.height = h;
      g.width = w;
      g.check();            // names a map smaller than the dilated kernel
      if (p.acc) p.fold();  // a new size: the sums so far are kept apart
      p.acc = make<T>(&g);
      conv_ = g;
    }
    const int64_t images = static_cast<int64_t>(x.shape(0));
    {
      nanobind::gil_scoped_release release;
      p.acc->add(x.data(), xh.data(), images, conv_->map_size());
    }
    count_ += images * conv_->positions();
    images_ += images;
  }

  template <typename T>
  Matrix<T> result() {
    auto& p = part<T>();
    Matrix<T> k = p.done ? *p.done : Matrix<T>(n_, n_);
    if (p.acc) {
      const Matrix<T> r = p.acc->result();
      for (size_t i = 0; i < k.data.size(); ++i) k.data[i] += r.data[i];
    }
    return k;
  }

 private:
  template <typename T>
  struct Part {
    std::shared_ptr<CrossAccumulator<T>> acc;
    std::optional<Matrix<T>> done;  // the sums of earlier map sizes
    void fold() {
      Matrix<T> r = acc->result();
      if (done)
        for (size_t i = 0; i < r.data.size(); ++i) r.data[i] += done->data[i];
      done = std::move(r);
      acc.reset();
    }
  };

  Device device_;
  Precision precision_;
  int64_t n_ = 0, count_ = 0, images_ = 0;
  std::optional<ConvGeometry> conv_;
  std::shared_ptr<Backend> backend_;
  std::variant<Part<float>, Part<double>> part_;

  template <typename T>
  Part<T>& part() {
    if (is_double() != std::is_same_v<T, double>)
      throw Error("CrossStats: the batch's dtype does not match the precision");
    return std::get<Part<T>>(part_);
  }
  template <typename T>
  std::shared_ptr<CrossAccumulator<T>> make(const ConvGeometry* g) const {
    return make_cross_stats<T>(*backend_, n_, g, kChunk);
  }
  template <typename A>
  static void check_pair(const A& x, const A& xh, int dims) {
    for (int d = 0; d < dims; ++d)
      if (x.shape(d) != xh.shape(d))
        throw Error(
            "the original network's and the compressed network's batches differ in shape: "
            "add the same samples' inputs in both, in the same order");
  }
};

}  // namespace dalr::python
