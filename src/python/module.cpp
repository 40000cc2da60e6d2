// The Python extension dalr._dalr (nanobind): one layer's streaming statistics and its
// solve, over the same backends as the command line (dalr::Backend), so that a result
// from Python is the CLI's. python/dalr/ wraps it as dalr.Stats, dalr.solve and
// dalr.compress; the conversion of NumPy arrays and torch tensors to the C-contiguous
// arrays of the statistics' scalar type happens there, this file takes them as they are.
//
// Arrays: a (rows, n) C-contiguous array is the n x rows column-major block, leading
// dimension n, that StatsAccumulator::add takes: no copy.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/finite.hpp"
#include "core/job_common.hpp"  // Clock, seconds_since, check_layer_finite
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/precision.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#ifdef DALR_HAVE_CUDA
#include "dalr/cuda.hpp"
#endif

namespace nb = nanobind;

namespace dalr::python {

namespace {

template <typename T>
using HostRows = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using HostVec = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using CudaRows = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cuda>;

// Samples per call into an accumulator: the GPU's buffers are sized by it.
constexpr int64_t kChunk = 1024;

struct Device {
  bool cpu = true;
  int index = 0;
  std::string name() const { return cpu ? "cpu" : "cuda:" + std::to_string(index); }
};

// "cpu", "cuda" or "cuda:N" (the CLI's --device without "auto": the Python side picks).
Device parse_device(const std::string& text) {
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

bool cuda_built() {
#ifdef DALR_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_devices() {
#ifdef DALR_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::shared_ptr<Backend> make_backend(const Device& d, Precision p) {
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

// A NumPy array that owns `v` (moved into a capsule).
template <typename T>
nb::ndarray<nb::numpy, T> numpy_of(std::vector<T> v, std::vector<size_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule del(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(owned->data(), shape.size(), shape.data(), del);
}

template <typename T>
nb::ndarray<nb::numpy, T> numpy_row_major(const Matrix<T>& m) {
  return numpy_of(to_row_major(m), {static_cast<size_t>(m.rows), static_cast<size_t>(m.cols)});
}

// One precision's state of a Stats object.
template <typename T>
struct Accumulator {
  std::unique_ptr<StatsAccumulator<T>> acc;
  Matrix<T> w;  // the layer, when output statistics are kept (pruning needs them)
  std::vector<T> b;
};

}  // namespace

// dalr.Stats: the statistics of one layer's inputs (and, given the layer, of its
// relu outputs), on one device and precision.
class Stats {
 public:
  Stats(int64_t n, const std::string& precision, const std::string& device)
      : device_(parse_device(device)), precision_(parse_precision(precision, device_.cpu)), n_(n) {
    if (n < 1) throw Error("Stats: the width n must be at least 1 (got " + std::to_string(n) + ")");
    backend_ = make_backend(device_, precision_);
    if (uses_double(precision_))
      start<double>(nullptr, nullptr);
    else
      start<float>(nullptr, nullptr);
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
    s.start<T>(&keep->w, &keep->b, keep);
    return s;
  }

  int64_t n() const { return n_; }
  int64_t m() const { return m_; }
  int64_t count() const { return count_; }
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
    if (x.device_id() != device_.index)
      throw Error("the tensor is on cuda:" + std::to_string(x.device_id()) +
                  ", the statistics on " + device_.name());
    const int64_t rows = static_cast<int64_t>(x.shape(0));
    for (int64_t j = 0; j < rows; j += kChunk) {
      const int64_t cols = std::min(kChunk, rows - j);
      a.add_device(x.data() + j * n_, cols, n_, count_ + j, reinterpret_cast<void*>(stream));
    }
    count_ += rows;
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
  int64_t n_ = 0, m_ = 0, count_ = 0;
  bool has_layer_ = false;
  std::shared_ptr<Backend> backend_;
  std::variant<std::shared_ptr<Accumulator<float>>, std::shared_ptr<Accumulator<double>>> acc_;

  template <typename T>
  void start(const Matrix<T>* w, const std::vector<T>* b,
             std::shared_ptr<Accumulator<T>> keep = nullptr) {
    if (!keep) keep = std::make_shared<Accumulator<T>>();
    keep->acc = backend_->stats(n_, m_, w, b, kChunk);
    acc_ = keep;
  }
  template <typename T>
  StatsAccumulator<T>& accumulator() {
    return *std::get<std::shared_ptr<Accumulator<T>>>(acc_)->acc;
  }
  template <typename T>
  void adopt(LayerStats<T> st) {
    n_ = st.n();
    m_ = st.m();
    start<T>(nullptr, nullptr);  // with m > 0 and no layer: add() refuses, merge() works
    count_ = st.count();
    accumulator<T>().merge(st);
  }
  void check_rows(size_t width) const {
    if (m_ > 0 && !has_layer_)
      throw Error(
          "these statistics keep their layer's output statistics (saved by --save-stats "
          "or Stats(weight=, bias=)) but were loaded without the layer: more samples "
          "cannot be added; merge() them into a Stats made with the layer instead");
    if (static_cast<int64_t>(width) != n_)
      throw Error("activation batch has " + std::to_string(width) + " features, the statistics " +
                  std::to_string(n_));
  }
  static std::string file_precision(const std::string& path) {
    SafetensorsFile f(path);
    auto p = f.metadata().find("dalr.precision");
    return p != f.metadata().end() && p->second == "fp32" ? "fp32" : "fp64";
  }
};

namespace {

nb::dict error_dict(const ReconError& e) {
  nb::dict d;
  d["abs"] = e.abs;
  d["rel"] = e.rel;
  d["ref_norm"] = e.ref;
  d["samples"] = e.samples;
  return d;
}

// The solve of one layer y = W x + b (W: (m, n) row-major, b: (m,)) from `st`, on
// `device` (the statistics' backend when it is the same device). Returns a dict: A (m, k),
// B (k, n), bias, kept_units (pruning; A is None then), spectrum and the report, whose
// fields are those of the CLI's JSON report for one layer.
template <typename T>
nb::dict solve(Stats& st, const HostRows<T>& w_in, const HostVec<T>& b_in,
               const std::string& method_name_in, std::optional<int64_t> rank,
               std::optional<double> keep, std::optional<double> lam, double lam_rel,
               const std::string& device, bool error, bool had_bias) {
  const Clock::time_point t0 = Clock::now();
  if (st.is_double() != std::is_same_v<T, double>)
    throw Error("solve: the weight's dtype does not match the statistics' precision");
  const Method method = method_from_name(method_name_in);
  if (rank.has_value() == keep.has_value())
    throw Error(rank ? "give rank or keep, not both" : "give rank=K or keep=FRACTION");
  if (keep && !(*keep > 0 && *keep <= 1)) throw Error("keep must be a fraction in (0, 1]");
  check_lambda_rel(lam_rel);
  Matrix<T> w = to_matrix(w_in);
  std::vector<T> b = to_vector(b_in);
  check_layer_finite("layer", w, b);
  const int64_t m = w.rows, n = w.cols;
  const Device dev = parse_device(device);
  std::shared_ptr<Backend> backend =
      dev.name() == st.device() ? st.backend()
                                : make_backend(dev, parse_precision(st.precision(), dev.cpu));
  LayerStats<T> stats = st.result<T>();

  SolveOptions opt;
  opt.method = method;
  opt.rank = rank ? *rank : rank_for_keep(method, m, n, *keep);
  const double lam_rel_used = lam ? 0.0 : lam_rel;
  if (needs_gram(method)) opt.lambda = lam ? *lam : default_lambda(stats, lam_rel);
  Factors<T> f;
  {
    nb::gil_scoped_release release;
    f = backend->solve(opt, w, b, stats);
  }
  const double solve_s = seconds_since(t0);
  for (const auto* v : {&f.a.data, &f.b.data})
    if (first_non_finite(v->data(), v->size()) >= 0)
      throw Error(std::string("the factors are not finite: the solve overflowed in ") +
                  st.precision() + "; use precision='fp64' or scale the activations down");
  if (first_non_finite(f.bias.data(), f.bias.size()) >= 0)
    throw Error(std::string("the factors' bias is not finite: the solve overflowed in ") +
                st.precision() + "; use precision='fp64' or scale the activations down");

  nb::dict rep, layer, params, timing;
  layer["m"] = m;
  layer["n"] = n;
  layer["had_bias"] = had_bias;
  rep["layer"] = layer;
  rep["method"] = method_name(method);
  rep["rank"] = f.rank;
  rep["lambda"] = needs_gram(method) ? nb::cast(f.lambda) : nb::none();
  rep["lambda_rel"] = needs_gram(method) && !lam ? nb::cast(lam_rel_used) : nb::none();
  const int64_t before = m * n + m, after = params_after(method, m, n, f.rank);
  params["before"] = before;
  params["after"] = after;
  params["kept_fraction"] = double(after) / double(before);
  params["kept_fraction_weights"] =
      is_pruning(method) ? double(f.rank) / double(m) : double(f.rank * (m + n)) / double(m * n);
  rep["params"] = params;
  rep["energy_kept"] = f.energy_kept;
  rep["samples"] = stats.count();
  rep["error_train"] = nb::none();
  timing["solve"] = solve_s;
  if (error && stats.count() > 0) {
    const Clock::time_point t1 = Clock::now();
    ReconError e;
    {
      nb::gil_scoped_release release;
      e = backend->reconstruction_error(stats, w, b, f);
    }
    // An error that overflowed is None, never a number (the CLI's report: null).
    nb::dict ed = error_dict(e);
    for (const char* k : {"abs", "rel", "ref_norm"})
      if (!std::isfinite(nb::cast<double>(ed[k]))) ed[k] = nb::none();
    rep["error_train"] = ed;
    timing["error_train"] = seconds_since(t1);
  }
  rep["precision"] = st.precision();
  rep["device"] = backend->name();
  timing["total"] = seconds_since(t0);
  rep["timing_s"] = timing;

  nb::dict out;
  out["A"] = is_pruning(method) ? nb::none() : nb::cast(numpy_row_major(f.a));
  out["B"] = numpy_row_major(f.b);
  out["bias"] = numpy_of(std::vector<T>(f.bias), {f.bias.size()});
  out["kept_units"] = f.kept_units;
  out["spectrum"] = f.spectrum;
  if (is_pruning(method)) rep["kept_units"] = f.kept_units;
  out["report"] = rep;
  return out;
}

template <typename T>
void bind_typed(nb::module_& m, nb::class_<Stats>& cls) {
  cls.def("add", &Stats::add_host<T>, nb::arg("x").noconvert())
      .def("add_cuda", &Stats::add_cuda<T>, nb::arg("x").noconvert(), nb::arg("stream") = 0)
      .def_static("with_layer", &Stats::with_layer<T>, nb::arg("weight").noconvert(),
                  nb::arg("bias").noconvert(), nb::arg("precision"), nb::arg("device"));
  m.def("solve", &solve<T>, nb::arg("stats"), nb::arg("weight").noconvert(),
        nb::arg("bias").noconvert(), nb::arg("method"), nb::arg("rank").none(),
        nb::arg("keep").none(), nb::arg("lam").none(), nb::arg("lam_rel"), nb::arg("device"),
        nb::arg("error"), nb::arg("had_bias"));
}

}  // namespace

}  // namespace dalr::python

NB_MODULE(_dalr, m) {
  using namespace dalr::python;
  m.doc() = "dalr-gpu's engine (the statistics and the solve of one layer); use the dalr package";
  nb::exception<dalr::Error>(m, "Error", PyExc_ValueError);
  nb::class_<Stats> cls(m, "Stats");
  cls.def(nb::init<int64_t, const std::string&, const std::string&>(), nb::arg("n"),
          nb::arg("precision"), nb::arg("device"))
      .def_prop_ro("n", &Stats::n)
      .def_prop_ro("m", &Stats::m)
      .def_prop_ro("count", &Stats::count)
      .def_prop_ro("precision", &Stats::precision)
      .def_prop_ro("device", &Stats::device)
      .def("merge", &Stats::merge, nb::arg("other"))
      .def("save", &Stats::save, nb::arg("path"), nb::arg("layer").none())
      .def_static("load", &Stats::load, nb::arg("path"), nb::arg("precision"), nb::arg("device"));
  bind_typed<double>(m, cls);
  bind_typed<float>(m, cls);
  m.def("method_names", &dalr::method_names);
  m.def("cuda_built", &cuda_built);
  m.def("cuda_devices", &cuda_devices);
}
