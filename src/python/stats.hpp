#pragma once
// dalr.Stats' engine side (src/python/module.cpp binds it): one layer's streaming
// statistics on one device and precision, over the same backends as the command line;
// rows of activations, or a conv layer's input feature maps (Backend::conv_stats).
//
// Arrays: a (rows, n) C-contiguous array is the n x rows column-major block, leading
// dimension n, that StatsAccumulator::add takes: no copy. Likewise a (images, C, H, W)
// C-contiguous batch of feature maps is the map_size x images block that the conv
// accumulator takes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/checked.hpp"
#include "core/job_common.hpp"  // check_layer_finite
#include "dalr/backend.hpp"
#include "dalr/conv_geometry.hpp"
#include "dalr/error.hpp"
#include "dalr/precision.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/stats.hpp"
#ifdef DALR_HAVE_CUDA
#include "dalr/cuda.hpp"
#endif

namespace dalr::python {

namespace nb = nanobind;

template <typename T>
using HostRows = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using HostVec = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using CudaRows = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cuda>;
template <typename T>
using HostMaps = nb::ndarray<const T, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
template <typename T>
using CudaMaps = nb::ndarray<const T, nb::ndim<4>, nb::c_contig, nb::device::cuda>;

// Samples per call into an accumulator: the GPU's buffers are sized by it.
constexpr int64_t kChunk = 1024;

struct Device {
  bool cpu = true;
  int index = 0;
  std::string name() const { return cpu ? "cpu" : "cuda:" + std::to_string(index); }
};

// "cpu", "cuda" or "cuda:N" (the CLI's --device without "auto": the Python side picks).
inline Device parse_device(const std::string& text) {
  Device d;
  if (text == "cpu") return d;
  d.cpu = false;
  if (text == "cuda") return d;
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
      text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() < 10) {
    d.index = std::stoi(text.substr(5));
    return d;
  }
  throw Error("device must be 'cpu', 'cuda' or 'cuda:N' (got '" + text + "')");
}

inline std::shared_ptr<Backend> make_backend(const Device& d, Precision p) {
  if (d.cpu) return make_cpu_backend(p);
#ifdef DALR_HAVE_CUDA
  if (d.index >= cuda::device_count())
    throw Error("device " + d.name() + ": " + std::to_string(cuda::device_count()) +
                " CUDA device(s) found (use device='cpu')");
  return cuda::make_backend(d.index, p);
#else
  throw Error("device " + d.name() +
              ": this dalr package was built without CUDA (use device='cpu')");
#endif
}

template <typename T>
Matrix<T> to_matrix(const HostRows<T>& a) {  // row-major (rows, cols) -> column-major
  return from_row_major(a.data(), static_cast<int64_t>(a.shape(0)),
                        static_cast<int64_t>(a.shape(1)));
}

template <typename T>
std::vector<T> to_vector(const HostVec<T>& a) {
  return std::vector<T>(a.data(), a.data() + a.shape(0));
}

// A conv layer's geometry for statistics of width n, its map size (height, width 0) not
// yet known: set_conv's checks, shared by Stats and CrossStats.
inline ConvGeometry conv_without_size(int64_t channels, int64_t kernel_h, int64_t kernel_w,
                                      int64_t stride, int64_t pad, int64_t dilation, int64_t n) {
  ConvGeometry g;
  g.channels = channels;
  g.kernel_h = kernel_h;
  g.kernel_w = kernel_w;
  g.stride = stride;
  g.pad = pad;
  g.dilation = dilation;
  g.height = g.width = 1;
  if (kernel_h >= 1 && kernel_w >= 1 && dilation >= 1) {  // a map the kernel fits in
    g.height = checked_mul(dilation, kernel_h - 1, "the dilated kernel's height") + 1;
    g.width = checked_mul(dilation, kernel_w - 1, "the dilated kernel's width") + 1;
  }
  g.check();  // names a size below 1 or a negative padding
  const int64_t patch =
      checked_mul(checked_mul(channels, kernel_h, "the patch size"), kernel_w, "the patch size");
  if (patch != n)
    throw Error("set_conv: the patches of " + std::to_string(channels) + " channels and a " +
                std::to_string(kernel_h) + " x " + std::to_string(kernel_w) + " kernel have " +
                std::to_string(patch) + " values, the statistics' width is " + std::to_string(n));
  g.height = g.width = 0;  // not known before the first batch
  return g;
}

// One precision's state of a Stats object.
template <typename T>
struct Accumulator {
  std::unique_ptr<StatsAccumulator<T>> acc;
  Matrix<T> w;  // the layer, when output statistics are kept (pruning needs them)
  std::vector<T> b;
};

// dalr.Stats: the statistics of one layer's inputs (and, given the layer, of its
// relu outputs), on one device and precision.
class Stats {
 public:
  Stats(int64_t n, const std::string& precision, const std::string& device)
      : device_(parse_device(device)), precision_(parse_precision(precision, device_.cpu)), n_(n) {
    if (n < 1) throw Error("Stats: the width n must be at least 1 (got " + std::to_string(n) + ")");
    backend_ = make_backend(device_, precision_);
    if (uses_double(precision_))
      start<double>();
    else
      start<float>();
  }
  template <typename T>
  static Stats with_layer(const HostRows<T>& w, const HostVec<T>& b, const std::string& precision,
                          const std::string& device) {
    Stats s(static_cast<int64_t>(w.shape(1)), precision, device);
    if (s.is_double() != std::is_same_v<T, double>)
      throw Error("Stats: the layer's dtype does not match the precision");
    if (b.shape(0) != w.shape(0))
      throw Error("Stats: bias has " + std::to_string(b.shape(0)) + " values, the weight has " +
                  std::to_string(w.shape(0)) + " rows");
    auto keep = std::make_shared<Accumulator<T>>();
    keep->w = to_matrix(w);
    keep->b = to_vector(b);
    check_layer_finite("layer", keep->w, keep->b);
    s.m_ = keep->w.rows;
    s.has_layer_ = true;
    s.start<T>(keep);
    return s;
  }

  // Makes these statistics a conv layer's, before any sample: add_maps() then takes the
  // layer's input feature maps and n is the patch size channels * kernel_h * kernel_w.
  // The maps' height and width come with each batch: the accumulator is made for the
  // first batch's and remade when a batch of another size comes.
  void set_conv(int64_t channels, int64_t kernel_h, int64_t kernel_w, int64_t stride, int64_t pad,
                int64_t dilation) {
    if (count_ > 0 || conv_)
      throw Error("set_conv: the statistics already hold samples or a convolution");
    conv_ = conv_without_size(channels, kernel_h, kernel_w, stride, pad, dilation, n_);
  }

  int64_t n() const { return n_; }
  int64_t m() const { return m_; }
  int64_t count() const { return count_; }
  int64_t images() const { return images_; }
  bool is_double() const { return uses_double(precision_); }
  std::string precision() const { return precision_name(precision_); }
  std::string device() const { return device_.name(); }
  std::shared_ptr<Backend> backend() const { return backend_; }

  // x: (rows, n) C-contiguous host array of the statistics' dtype.
  template <typename T>
  void add_host(const HostRows<T>& x) {
    check_rows(x.shape(1));
    const int64_t rows = static_cast<int64_t>(x.shape(0));
    auto& a = accumulator<T>();
    for (int64_t j = 0; j < rows; j += kChunk) {
      const int64_t cols = std::min(kChunk, rows - j);
      a.add(x.data() + j * n_, cols, n_, count_ + j);
    }
    count_ += rows;
  }
  // x: (rows, n) C-contiguous CUDA array (DLPack), made by work queued on `stream`
  // (a cudaStream_t as an integer, 0: the legacy default stream).
  template <typename T>
  void add_cuda(const CudaRows<T>& x, uintptr_t stream) {
    check_rows(x.shape(1));
    auto& a = accumulator<T>();
    if (!a.supports_device_add())
      throw Error("Stats on " + device_.name() +
                  " take host arrays; a CUDA tensor needs "
                  "Stats(device='cuda')");
    check_device(x.device_id());
    const int64_t rows = static_cast<int64_t>(x.shape(0));
    for (int64_t j = 0; j < rows; j += kChunk) {
      const int64_t cols = std::min(kChunk, rows - j);
      a.add_device(x.data() + j * n_, cols, n_, count_ + j, reinterpret_cast<void*>(stream));
    }
    count_ += rows;
  }
  // x: (images, C, H, W) C-contiguous host array of the statistics' dtype (set_conv).
  template <typename T>
  void add_maps(const HostMaps<T>& x) {
    auto& a = conv_accumulator<T>(x.shape(1), x.shape(2), x.shape(3));
    const int64_t images = static_cast<int64_t>(x.shape(0));
    {
      nb::gil_scoped_release release;
      a.add(x.data(), images, conv_->map_size(), images_);
    }
    count_images(images);
  }
  // The same on the device (as add_cuda). Returns false, having added nothing, when the
  // backend's conv accumulator takes host maps only (the caller copies them to the host).
  template <typename T>
  bool add_maps_cuda(const CudaMaps<T>& x, uintptr_t stream) {
    auto& a = conv_accumulator<T>(x.shape(1), x.shape(2), x.shape(3));
    if (!a.supports_device_add()) return false;
    check_device(x.device_id());
    const int64_t images = static_cast<int64_t>(x.shape(0));
    a.add_device(x.data(), images, conv_->map_size(), images_, reinterpret_cast<void*>(stream));
    count_images(images);
    return true;
  }

  template <typename T>
  LayerStats<T> result() {
    return accumulator<T>().result();
  }
  void merge(Stats& other) {
    if (other.n_ != n_ || other.m_ != m_ || other.is_double() != is_double())
      throw Error("merge: the statistics differ in width (" + std::to_string(n_) + " vs " +
                  std::to_string(other.n_) + "), output width or precision");
    if (is_double())
      accumulator<double>().merge(other.result<double>());
    else
      accumulator<float>().merge(other.result<float>());
    count_ += other.count_;
  }
  void save(const std::string& path, const std::optional<std::string>& layer) {
    std::map<std::string, std::string> extra;
    if (layer) extra["dalr.layer"] = *layer;
    if (is_double())
      result<double>().save(path, extra);
    else
      result<float>().save(path, extra);
  }
  // precision: empty = the file's (dalr.precision).
  static Stats load(const std::string& path, const std::string& precision,
                    const std::string& device) {
    std::map<std::string, std::string> meta;
    Stats s(1, precision.empty() ? file_precision(path) : precision, device);
    if (s.is_double())
      s.adopt(LayerStats<double>::load(path, &meta));
    else
      s.adopt(LayerStats<float>::load(path, &meta));
    return s;
  }

 private:
  Device device_;
  Precision precision_;
  int64_t n_ = 0, m_ = 0, count_ = 0, images_ = 0;
  bool has_layer_ = false;
  std::optional<ConvGeometry> conv_;  // a conv layer's (height 0 before the first batch)
  std::shared_ptr<Backend> backend_;
  std::variant<std::shared_ptr<Accumulator<float>>, std::shared_ptr<Accumulator<double>>> acc_;

  template <typename T>
  void start(std::shared_ptr<Accumulator<T>> keep = nullptr) {
    if (!keep) keep = std::make_shared<Accumulator<T>>();
    keep->acc = make_accumulator<T>(*keep, nullptr);
    acc_ = keep;
  }
  // Of rows of width n_, or of the patches of feature maps of geometry *g.
  template <typename T>
  std::unique_ptr<StatsAccumulator<T>> make_accumulator(const Accumulator<T>& keep,
                                                        const ConvGeometry* g) const {
    const Matrix<T>* w = has_layer_ ? &keep.w : nullptr;
    const std::vector<T>* b = has_layer_ ? &keep.b : nullptr;
    return g ? backend_->conv_stats(*g, m_, w, b, kChunk) : backend_->stats(n_, m_, w, b, kChunk);
  }
  // The accumulator for a batch of feature maps of this size. A size other than the last
  // batch's gets a new accumulator that resumes from the statistics so far (one copy of
  // them per change of size: sort batches by size where they vary a lot).
  template <typename T>
  StatsAccumulator<T>& conv_accumulator(size_t channels, size_t height, size_t width) {
    if (!conv_)
      throw Error(
          "feature maps (images, C, H, W) go to a conv layer's statistics "
          "(dalr.ConvStats); these take rows of " +
          std::to_string(n_) + " features");
    check_addable();
    if (static_cast<int64_t>(channels) != conv_->channels)
      throw Error("the feature maps have " + std::to_string(channels) +
                  " channels, the convolution takes " + std::to_string(conv_->channels));
    auto& keep = *std::get<std::shared_ptr<Accumulator<T>>>(acc_);
    if (static_cast<int64_t>(height) != conv_->height ||
        static_cast<int64_t>(width) != conv_->width) {
      ConvGeometry g = *conv_;
      g.height = static_cast<int64_t>(height);
      g.width = static_cast<int64_t>(width);
      g.check();  // names a map smaller than the dilated kernel
      auto next = make_accumulator<T>(keep, &g);
      if (count_ > 0) next->merge(keep.acc->finish());
      keep.acc = std::move(next);
      conv_ = g;
    }
    return *keep.acc;
  }
  void count_images(int64_t images) {
    count_ += images * conv_->positions();
    images_ += images;
  }
  void check_device(int32_t id) const {
    if (id != device_.index)
      throw Error("the tensor is on cuda:" + std::to_string(id) + ", the statistics on " +
                  device_.name());
  }
  template <typename T>
  StatsAccumulator<T>& accumulator() {
    return *std::get<std::shared_ptr<Accumulator<T>>>(acc_)->acc;
  }
  template <typename T>
  void adopt(LayerStats<T> st) {
    n_ = st.n();
    m_ = st.m();
    start<T>();  // with m > 0 and no layer: add() refuses, merge() works
    count_ = st.count();
    accumulator<T>().merge(st);
  }
  void check_rows(size_t width) const {
    if (conv_)
      throw Error("these are a conv layer's statistics: add feature maps (images, C, H, W)");
    check_addable();
    if (static_cast<int64_t>(width) != n_)
      throw Error("activation batch has " + std::to_string(width) + " features, the statistics " +
                  std::to_string(n_));
  }
  void check_addable() const {
    if (m_ > 0 && !has_layer_)
      throw Error(
          "these statistics keep their layer's output statistics (saved by --save-stats "
          "or Stats(weight=, bias=)) but were loaded without the layer: more samples "
          "cannot be added; merge() them into a Stats made with the layer instead");
  }
  static std::string file_precision(const std::string& path) {
    SafetensorsFile f(path);
    auto p = f.metadata().find("dalr.precision");
    return p != f.metadata().end() && p->second == "fp32" ? "fp32" : "fp64";
  }
};

}  // namespace dalr::python
