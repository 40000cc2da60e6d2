// The Python extension dalr._dalr (nanobind): one layer's streaming statistics
// (dalr::python::Stats, src/python/stats.hpp), the cross statistics of the asymmetric fit
// (CrossStats, src/python/cross.hpp) and the solves, over the same backends as the
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
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/finite.hpp"
#include "core/job_common.hpp"  // Clock, seconds_since, check_layer_finite
#include "dalr/asymmetric.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/precision.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "python/cross.hpp"
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

// The checks and options shared by solve and asymmetric_solve.
template <typename T>
struct Request {
  Method method;
  Matrix<T> w;
  std::vector<T> b;
  std::shared_ptr<Backend> backend;
  SolveOptions opt;
  double lam_rel_used = 0;
};

template <typename T>
Request<T> request(Stats& st, const HostRows<T>& w_in, const HostVec<T>& b_in,
                   const std::string& method_name_in, std::optional<int64_t> rank,
                   std::optional<double> keep, std::optional<double> lam, double lam_rel,
                   const std::string& device, const LayerStats<T>& stats) {
  if (st.is_double() != std::is_same_v<T, double>)
    throw Error("solve: the weight's dtype does not match the statistics' precision");
  Request<T> r;
  r.method = method_from_name(method_name_in);
  if (rank.has_value() == keep.has_value())
    throw Error(rank ? "give rank or keep, not both" : "give rank=K or keep=FRACTION");
  if (keep && !(*keep > 0 && *keep <= 1)) throw Error("keep must be a fraction in (0, 1]");
  check_lambda_rel(lam_rel);
  r.w = to_matrix(w_in);
  r.b = to_vector(b_in);
  check_layer_finite("layer", r.w, r.b);
  const Device dev = parse_device(device);
  r.backend = dev.name() == st.device()
                  ? st.backend()
                  : make_backend(dev, parse_precision(st.precision(), dev.cpu));
  r.opt.method = r.method;
  r.opt.rank = rank ? *rank : rank_for_keep(r.method, r.w.rows, r.w.cols, *keep);
  r.lam_rel_used = lam ? 0.0 : lam_rel;
  if (needs_gram(r.method)) r.opt.lambda = lam ? *lam : default_lambda(stats, lam_rel);
  return r;
}

// The Python result of a solve: a dict with A (m, k), B (k, n), bias, kept_units (pruning;
// A is None then), spectrum and the report, whose fields are those of the CLI's JSON
// report for one layer. `error` (empty: none) computes the training error.
template <typename T>
nb::dict result_dict(const Request<T>& r, const Factors<T>& f, const Stats& st, int64_t samples,
                     bool had_bias, bool lam_given, Clock::time_point t0, double solve_s,
                     const std::function<ReconError()>& error) {
  const Method method = r.method;
  const int64_t m = r.w.rows, n = r.w.cols;
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
  rep["lambda_rel"] = needs_gram(method) && !lam_given ? nb::cast(r.lam_rel_used) : nb::none();
  const int64_t before = m * n + m, after = params_after(method, m, n, f.rank);
  params["before"] = before;
  params["after"] = after;
  params["kept_fraction"] = double(after) / double(before);
  params["kept_fraction_weights"] =
      is_pruning(method) ? double(f.rank) / double(m) : double(f.rank * (m + n)) / double(m * n);
  rep["params"] = params;
  rep["energy_kept"] = f.energy_kept;
  rep["samples"] = samples;
  rep["error_train"] = nb::none();
  timing["solve"] = solve_s;
  if (error && samples > 0) {
    const Clock::time_point t1 = Clock::now();
    ReconError e;
    {
      nb::gil_scoped_release release;
      e = error();
    }
    // An error that overflowed is None, never a number (the CLI's report: null).
    nb::dict ed = error_dict(e);
    for (const char* k : {"abs", "rel", "ref_norm"})
      if (!std::isfinite(nb::cast<double>(ed[k]))) ed[k] = nb::none();
    rep["error_train"] = ed;
    timing["error_train"] = seconds_since(t1);
  }
  rep["precision"] = st.precision();
  rep["device"] = r.backend->name();
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

// The solve of one layer y = W x + b (W: (m, n) row-major, b: (m,)) from `st`, on
// `device` (the statistics' backend when it is the same device).
template <typename T>
nb::dict solve(Stats& st, const HostRows<T>& w_in, const HostVec<T>& b_in,
               const std::string& method_name, std::optional<int64_t> rank,
               std::optional<double> keep, std::optional<double> lam, double lam_rel,
               const std::string& device, bool error, bool had_bias) {
  const Clock::time_point t0 = Clock::now();
  LayerStats<T> stats = st.result<T>();
  const Request<T> r =
      request(st, w_in, b_in, method_name, rank, keep, lam, lam_rel, device, stats);
  Factors<T> f;
  {
    nb::gil_scoped_release release;
    f = r.backend->solve(r.opt, r.w, r.b, stats);
  }
  const double solve_s = seconds_since(t0);
  std::function<ReconError()> err;
  if (error) err = [&] { return r.backend->reconstruction_error(stats, r.w, r.b, f); };
  return result_dict(r, f, st, stats.count(), had_bias, lam.has_value(), t0, solve_s, err);
}

// The asymmetric fit (dalr/asymmetric.hpp) from C^ (`hat`, the inputs in the compressed
// network), C_o (`orig`, in the original one) and K (`cross`), all of the same samples;
// lambda from C^ as in the CLI. dalr and dalr-exact only.
template <typename T>
nb::dict asymmetric_solve(Stats& hat, Stats& orig, CrossStats& cross, const HostRows<T>& w_in,
                          const HostVec<T>& b_in, const std::string& method_name,
                          std::optional<int64_t> rank, std::optional<double> keep,
                          std::optional<double> lam, double lam_rel, const std::string& device,
                          bool error, bool had_bias) {
  const Clock::time_point t0 = Clock::now();
  if (hat.n() != orig.n() || hat.n() != cross.n() || hat.is_double() != orig.is_double() ||
      hat.is_double() != cross.is_double())
    throw Error("asymmetric_solve: the statistics differ in width or precision (C^: n " +
                std::to_string(hat.n()) + ", " + hat.precision() + "; C_o: n " +
                std::to_string(orig.n()) + ", " + orig.precision() + "; K: n " +
                std::to_string(cross.n()) + ", " + cross.precision() + ")");
  if (hat.count() != orig.count() || hat.count() != cross.count())
    throw Error("asymmetric_solve: the statistics count different samples (C^ " +
                std::to_string(hat.count()) + ", C_o " + std::to_string(orig.count()) + ", K " +
                std::to_string(cross.count()) +
                "): add the same batches, in both networks, to all three");
  if (hat.count() == 0) throw Error("asymmetric_solve: the statistics hold no samples");
  const LayerStats<T> st_hat = hat.result<T>(), st_orig = orig.result<T>();
  const Matrix<T> k = cross.result<T>();
  const Request<T> r =
      request(hat, w_in, b_in, method_name, rank, keep, lam, lam_rel, device, st_hat);
  if (r.method != Method::Dalr && r.method != Method::DalrExact)
    throw Error(std::string("asymmetric_solve: the asymmetric fit is for dalr and dalr-exact, "
                            "not ") +
                dalr::method_name(r.method) + " (use dalr.solve)");
  if (r.w.cols != hat.n())
    throw Error("asymmetric_solve: the weight takes " + std::to_string(r.w.cols) +
                " inputs, the statistics have width " + std::to_string(hat.n()));
  const AsymmetricStats<T> ast{&st_hat, &st_orig, &k};
  Factors<T> f;
  {
    nb::gil_scoped_release release;
    f = r.backend->asymmetric_solve(r.opt, r.w, r.b, ast);
  }
  const double solve_s = seconds_since(t0);
  std::function<ReconError()> err;
  if (error) err = [&] { return r.backend->asymmetric_error(ast, r.w, r.b, f); };
  return result_dict(r, f, hat, st_hat.count(), had_bias, lam.has_value(), t0, solve_s, err);
}

template <typename T>
void bind_typed(nb::module_& m, nb::class_<Stats>& cls, nb::class_<CrossStats>& cross) {
  cls.def("add", &Stats::add_host<T>, nb::arg("x").noconvert())
      .def("add_cuda", &Stats::add_cuda<T>, nb::arg("x").noconvert(), nb::arg("stream") = 0)
      .def("add_maps", &Stats::add_maps<T>, nb::arg("x").noconvert())
      .def("add_maps_cuda", &Stats::add_maps_cuda<T>, nb::arg("x").noconvert(),
           nb::arg("stream") = 0)
      .def_static("with_layer", &Stats::with_layer<T>, nb::arg("weight").noconvert(),
                  nb::arg("bias").noconvert(), nb::arg("precision"), nb::arg("device"));
  cross.def("add", &CrossStats::add_host<T>, nb::arg("x").noconvert(), nb::arg("xh").noconvert())
      .def("add_maps", &CrossStats::add_maps<T>, nb::arg("x").noconvert(),
           nb::arg("xh").noconvert());
  m.def("asymmetric_solve", &asymmetric_solve<T>, nb::arg("hat"), nb::arg("orig"), nb::arg("cross"),
        nb::arg("weight").noconvert(), nb::arg("bias").noconvert(), nb::arg("method"),
        nb::arg("rank").none(), nb::arg("keep").none(), nb::arg("lam").none(), nb::arg("lam_rel"),
        nb::arg("device"), nb::arg("error"), nb::arg("had_bias"));
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
  nb::class_<CrossStats> cross(m, "CrossStats");
  cross
      .def(nb::init<int64_t, const std::string&, const std::string&>(), nb::arg("n"),
           nb::arg("precision"), nb::arg("device"))
      .def_prop_ro("n", &CrossStats::n)
      .def_prop_ro("count", &CrossStats::count)
      .def_prop_ro("images", &CrossStats::images)
      .def_prop_ro("precision", &CrossStats::precision)
      .def_prop_ro("device", &CrossStats::device)
      .def("set_conv", &CrossStats::set_conv, nb::arg("channels"), nb::arg("kernel_h"),
           nb::arg("kernel_w"), nb::arg("stride"), nb::arg("pad"), nb::arg("dilation"));
  bind_typed<double>(m, cls, cross);
  bind_typed<float>(m, cls, cross);
  m.def("method_names", &dalr::method_names);
  m.def("cuda_built", &cuda_built);
  m.def("cuda_devices", &cuda_devices);
}
