// The Python extension dalr._dalr (nanobind): one layer's streaming statistics
// (dalr::python::Stats, src/python/stats.hpp) and its solve, over the same backends as the
// command line (dalr::Backend), so that a result from Python is the CLI's. python/dalr/
// wraps it as dalr.Stats, dalr.ConvStats, dalr.solve and dalr.compress; the conversion of
// NumPy arrays and torch tensors to the C-contiguous arrays of the statistics' scalar type
// happens there, this file takes them as they are.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/finite.hpp"
#include "core/job_common.hpp"  // Clock, seconds_since, check_layer_finite
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/precision.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "python/stats.hpp"
#ifdef DALR_HAVE_CUDA
#include "dalr/cuda.hpp"
#endif

namespace nb = nanobind;

namespace dalr::python {

namespace {

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
      .def("add_maps", &Stats::add_maps<T>, nb::arg("x").noconvert())
      .def("add_maps_cuda", &Stats::add_maps_cuda<T>, nb::arg("x").noconvert(),
           nb::arg("stream") = 0)
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
      .def_prop_ro("images", &Stats::images)
      .def_prop_ro("precision", &Stats::precision)
      .def_prop_ro("device", &Stats::device)
      .def("merge", &Stats::merge, nb::arg("other"))
      .def("set_conv", &Stats::set_conv, nb::arg("channels"), nb::arg("kernel_h"),
           nb::arg("kernel_w"), nb::arg("stride"), nb::arg("pad"), nb::arg("dilation"))
      .def("save", &Stats::save, nb::arg("path"), nb::arg("layer").none())
      .def_static("load", &Stats::load, nb::arg("path"), nb::arg("precision"), nb::arg("device"));
  bind_typed<double>(m, cls);
  bind_typed<float>(m, cls);
  m.def("method_names", &dalr::method_names);
  m.def("cuda_built", &cuda_built);
  m.def("cuda_devices", &cuda_devices);
}
