#include "dalr/compress.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/recon.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "io/atomic_file.hpp"

namespace dalr {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

// Refuses outputs that would overwrite an input, and fails early (before the long
// computation) when an output folder is not writable.
void check_paths(const CompressOptions& o) {
  if (o.model.empty()) throw Error("--model is required");
  if (o.layer.empty()) throw Error("--layer is required (e.g. --layer classifier.0)");
  if (o.out.empty()) throw Error("--out is required");
  if (o.acts.empty() && o.stats_in.empty())
    throw Error("--acts FILE.npy (or --stats FILE) is required: the layer's input activations");
  const std::vector<std::pair<const char*, std::string>> inputs = {{"--model", o.model},
                                                                   {"--acts", o.acts},
                                                                   {"--acts-test", o.acts_test},
                                                                   {"--stats", o.stats_in}};
  const std::vector<std::pair<const char*, std::string>> outputs = {
      {"--out", o.out}, {"--report", o.report}, {"--save-stats", o.save_stats}};
  for (const auto& [iname, ipath] : inputs) {
    if (ipath.empty()) continue;
    if (!std::filesystem::exists(ipath))
      throw Error(std::string(iname) + ": " + ipath + " does not exist");
    for (const auto& [oname, opath] : outputs)
      if (!opath.empty() && same_file(ipath, opath))
        throw Error(std::string(oname) + " " + opath + " is the same file as " + iname +
                    ": refusing to overwrite an input");
  }
  for (size_t i = 0; i < outputs.size(); ++i)
    for (size_t j = i + 1; j < outputs.size(); ++j)
      if (!outputs[i].second.empty() && !outputs[j].second.empty() &&
          same_file(outputs[i].second, outputs[j].second))
        throw Error(std::string(outputs[i].first) + " and " + outputs[j].first +
                    " name the same file");
  for (const auto& [oname, opath] : outputs)
    if (!opath.empty()) AtomicFile probe(opath);  // throws "cannot write PATH: ..."
}

std::string list_layers(const SafetensorsFile& f) {
  std::string s;
  for (const auto& t : f.tensors()) {
    const std::string suffix = ".weight";
    if (t.shape.size() == 2 && t.name.size() > suffix.size() &&
        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      s += (s.empty() ? "" : ", ") + t.name.substr(0, t.name.size() - suffix.size()) + " (" +
           std::to_string(t.shape[0]) + "x" + std::to_string(t.shape[1]) + ")";
    }
  }
  return s.empty() ? "none" : s;
}

template <typename T>
struct Layer {
  Matrix<T> w;
  std::vector<T> b;
  bool had_bias = false;
};

template <typename T>
Layer<T> load_layer(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* wi = f.find(name + ".weight");
  if (!wi)
    throw Error("unknown layer '" + name + "': " + f.path() + " has no tensor '" + name +
                ".weight' (fully connected layers found: " + list_layers(f) + ")");
  if (wi->shape.size() != 2)
    throw Error("layer '" + name + "' is not fully connected: " + name + ".weight has " +
                std::to_string(wi->shape.size()) + " dimensions, expected 2 (m x n)");
  const int64_t m = wi->shape[0], n = wi->shape[1];
  if (m <= 0 || n <= 0) throw Error("layer '" + name + "' has an empty weight");
  Layer<T> l;
  l.w = from_row_major(f.read<T>(wi->name).data(), m, n);
  if (const TensorInfo* bi = f.find(name + ".bias")) {
    if (bi->shape != std::vector<int64_t>{m})
      throw Error(name + ".bias has the wrong shape: expected [" + std::to_string(m) + "]");
    l.b = f.read<T>(bi->name);
    l.had_bias = true;
  } else {
    l.b.assign(static_cast<size_t>(m), T(0));
  }
  for (size_t i = 0; i < l.w.data.size(); ++i)
    if (!std::isfinite(l.w.data[i])) throw Error(name + ".weight contains NaN or Inf");
  return l;
}

template <typename T>
LayerStats<T> gather_stats(const CompressOptions& o, const Layer<T>& l, Backend& backend,
                           json& rep) {
  const int64_t m = l.w.rows, n = l.w.cols;
  auto acc = backend.stats(n, m, &l.w, &l.b, o.batch);
  int64_t first = 0;
  if (!o.stats_in.empty()) {
    std::map<std::string, std::string> meta;
    LayerStats<T> earlier = LayerStats<T>::load(o.stats_in, &meta);
    if (earlier.n() != n || earlier.m() != m)
      throw Error(o.stats_in + " holds statistics of a " + std::to_string(earlier.m()) + " x " +
                  std::to_string(earlier.n()) + " layer, but '" + o.layer + "' is " +
                  std::to_string(m) + " x " + std::to_string(n));
    if (meta.count("dalr.layer") && meta["dalr.layer"] != o.layer)
      throw Error(o.stats_in + " holds statistics of layer '" + meta["dalr.layer"] + "', not '" +
                  o.layer + "'");
    rep["stats_in"] = {{"path", o.stats_in}, {"samples", earlier.count()}};
    first = earlier.count();
    acc->merge(earlier);
  }
  if (!o.acts.empty()) {
    NpyReader r(o.acts);
    if (r.cols() != n)
      throw Error(o.acts + " has " + std::to_string(r.cols()) +
                  " features per sample, but layer '" + o.layer +
                  "' takes n = " + std::to_string(n) + " inputs");
    std::vector<T> buf(static_cast<size_t>(n * o.batch));
    for (int64_t c; (c = r.read_rows<T>(buf.data(), o.batch)) > 0; first += c)
      acc->add(buf.data(), c, n, first);
    rep["acts"] = {
        {"path", o.acts}, {"samples", r.rows()}, {"shape", r.shape()}, {"dtype", r.descr()}};
  }
  LayerStats<T> st = acc->result();
  if (st.count() == 0) throw Error("no activation samples: the activation file is empty");
  return st;
}

template <typename T>
std::vector<TensorOut> output_tensors(const SafetensorsFile& f, const CompressOptions& o,
                                      const Layer<T>& l, const Factors<T>& fac, json& rep) {
  const std::string wname = o.layer + ".weight", bname = o.layer + ".bias";
  const int64_t m = l.w.rows, n = l.w.cols, k = fac.rank;
  std::vector<TensorOut> out;
  const TensorInfo* next = nullptr;
  if (!o.next_layer.empty()) {
    if (!is_pruning(fac.method))
      throw Error("--next-layer only applies to the pruning methods (prune-mean, prune-max)");
    next = f.find(o.next_layer + ".weight");
    if (!next)
      throw Error("unknown --next-layer '" + o.next_layer + "': no tensor '" + o.next_layer +
                  ".weight' (fully connected layers found: " + list_layers(f) + ")");
    if (next->shape.size() != 2 || next->shape[1] != m)
      throw Error("--next-layer '" + o.next_layer + "' does not take layer '" + o.layer +
                  "' output: its weight is not (*, " + std::to_string(m) + ")");
  }
  for (const TensorInfo& t : f.tensors()) {
    if (t.name == bname) continue;
    if (t.name == wname) {
      if (is_pruning(fac.method)) {
        out.push_back(TensorOut::convert(wname, {k, n}, to_row_major(fac.b), DType::F32));
        out.push_back(TensorOut::convert(bname, {k}, fac.bias, DType::F32));
      } else {
        out.push_back(
            TensorOut::convert(o.layer + ".0.weight", {k, n}, to_row_major(fac.b), DType::F32));
        out.push_back(
            TensorOut::convert(o.layer + ".1.weight", {m, k}, to_row_major(fac.a), DType::F32));
        out.push_back(TensorOut::convert(o.layer + ".1.bias", {m}, fac.bias, DType::F32));
      }
      continue;
    }
    if (next && t.name == next->name) {
      const int64_t rows = next->shape[0];
      std::vector<float> src = f.read_f32(t.name), dst(static_cast<size_t>(rows * k));
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t r = 0; r < k; ++r) dst[i * k + r] = src[i * m + fac.kept_units[r]];
      out.push_back(TensorOut::f32(t.name, {rows, k}, dst));
      rep["next_layer"] = {
          {"name", o.next_layer}, {"shape_before", next->shape}, {"shape_after", {rows, k}}};
      continue;
    }
    out.push_back(TensorOut::borrow(f, t));
  }
  return out;
}

json recon_json(const ReconError& e) {
  return {{"abs", e.abs}, {"rel", e.rel}, {"ref_norm", e.ref}, {"samples", e.samples}};
}

template <typename T>
CompressResult run(const CompressOptions& o, Backend& backend) {
  const auto t_all = Clock::now();
  json rep, timing;
  CompressResult res;
  auto warn = [&](const std::string& w) { res.warnings.push_back(w); };

  check_paths(o);
  const Method method = method_from_name(o.method);
  if (o.batch < 1) throw Error("--batch must be at least 1");
  if ((o.rank > 0) == (o.keep > 0))
    throw Error(o.rank < 0 ? "--rank must be at least 1"
                           : "give exactly one of --rank K or --keep FRACTION");

  auto t0 = Clock::now();
  SafetensorsFile model(o.model);
  Layer<T> l = load_layer<T>(model, o.layer);
  const int64_t m = l.w.rows, n = l.w.cols;
  timing["load_model"] = seconds_since(t0);

  t0 = Clock::now();
  LayerStats<T> st = gather_stats<T>(o, l, backend, rep);
  timing["statistics"] = seconds_since(t0);
  if (!o.save_stats.empty()) {
    t0 = Clock::now();
    st.save(o.save_stats, {{"dalr.layer", o.layer}, {"dalr.model", o.model}});
    timing["save_stats"] = seconds_since(t0);
  }

  int64_t rank = o.rank;
  if (o.keep > 0)
    rank = rank_for_keep(method, m, n, o.keep);
  else if (is_pruning(method))
    rank = units_for_rank(m, n, o.rank);
  if (!is_pruning(method) && rank >= 1 && rank * (m + n) >= m * n)
    warn("rank " + std::to_string(rank) + " saves no parameters: k (m + n) = " +
         std::to_string(rank * (m + n)) + " >= m n = " + std::to_string(m * n));
  if (needs_gram(method) && rank > st.count())
    warn("rank " + std::to_string(rank) + " exceeds the " + std::to_string(st.count()) +
         " activation samples: directions beyond the data are arbitrary");

  const double lambda = o.lambda ? *o.lambda : default_lambda(st, o.lambda_rel);
  t0 = Clock::now();
  Factors<T> fac = backend.solve({method, rank, lambda}, l.w, l.b, st);
  timing["solve"] = seconds_since(t0);

  t0 = Clock::now();
  if (!o.acts.empty()) {
    NpyReader r(o.acts);
    rep["error_train"] = recon_json(reconstruction_error(r, l.w, l.b, fac, o.batch));
  }
  if (!o.acts_test.empty()) {
    NpyReader r(o.acts_test);
    if (r.cols() != n)
      throw Error(o.acts_test + " has " + std::to_string(r.cols()) +
                  " features per sample, but layer '" + o.layer +
                  "' takes n = " + std::to_string(n) + " inputs");
    rep["error_test"] = recon_json(reconstruction_error(r, l.w, l.b, fac, o.batch));
  }
  timing["error"] = seconds_since(t0);

  const int64_t before = m * n + m, after = params_after(method, m, n, rank);
  rep["layer"] = {{"name", o.layer}, {"m", m}, {"n", n}, {"had_bias", l.had_bias}};
  rep["method"] = method_name(method);
  rep["rank"] = rank;
  rep["precision"] = o.precision;
  rep["device"] = backend.name();
  rep["lambda"] = needs_gram(method) ? json(lambda) : json(nullptr);
  rep["lambda_rel"] = needs_gram(method) && !o.lambda ? json(o.lambda_rel) : json(nullptr);
  rep["params"] = {
      {"before", before},
      {"after", after},
      {"kept_fraction", double(after) / double(before)},
      {"kept_fraction_weights",
       is_pruning(method) ? double(rank) / double(m) : double(rank * (m + n)) / double(m * n)}};
  rep["energy_kept"] = fac.energy_kept;
  rep["samples"] = st.count();
  if (is_pruning(method)) rep["kept_units"] = fac.kept_units;

  t0 = Clock::now();
  std::map<std::string, std::string> meta = model.metadata();
  meta["dalr.method"] = method_name(method);
  meta["dalr.layer"] = o.layer;
  meta["dalr.rank"] = std::to_string(rank);
  meta["dalr.lambda"] = needs_gram(method) ? fmt(lambda, 17) : "0";
  meta["dalr.source"] = std::filesystem::path(o.model).filename().string();
  meta["dalr.acts"] = o.acts.empty() ? o.stats_in : o.acts;
  meta["dalr.samples"] = std::to_string(st.count());
  write_safetensors(o.out, output_tensors(model, o, l, fac, rep), meta);
  timing["write"] = seconds_since(t0);
  timing["total"] = seconds_since(t_all);
  rep["timing_s"] = timing;
  rep["warnings"] = res.warnings;
  rep["out"] = o.out;

  std::ostringstream s;
  s << "layer " << o.layer << " (" << m << " x " << n << "), " << st.count() << " samples\n"
    << "method " << method_name(method) << ", " << (is_pruning(method) ? "kept units " : "rank ")
    << rank;
  if (needs_gram(method)) s << ", lambda " << fmt(lambda);
  s << "\nparameters " << before << " -> " << after << " (" << fmt(100.0 * after / before, 3)
    << "% kept), " << (is_pruning(method) ? "activation mass kept " : "spectral energy kept ")
    << fmt(100.0 * fac.energy_kept, 4) << "%\n";
  if (rep.contains("error_train"))
    s << "reconstruction error (train): " << fmt(rep["error_train"]["abs"].get<double>())
      << " (relative " << fmt(rep["error_train"]["rel"].get<double>()) << ")\n";
  if (rep.contains("error_test"))
    s << "reconstruction error (test):  " << fmt(rep["error_test"]["abs"].get<double>())
      << " (relative " << fmt(rep["error_test"]["rel"].get<double>()) << ")\n";
  s << "wrote " << o.out << " in " << fmt(timing["total"].get<double>(), 3) << " s\n";
  res.summary = s.str();
  res.report_json = rep.dump(2);
  if (!o.report.empty()) write_text_file(o.report, res.report_json + "\n");
  return res;
}

}  // namespace

CompressResult compress(const CompressOptions& opt, Backend& backend) {
  if (opt.precision == "fp64") return run<double>(opt, backend);
  if (opt.precision == "fp32" || opt.precision == "tf32") {
    if (opt.precision == "tf32" && backend.name() == "cpu")
      throw Error("--precision tf32 needs --device cuda (TF32 is a tensor-core mode)");
    return run<float>(opt, backend);
  }
  throw Error("--precision must be fp64, fp32 or tf32 (got '" + opt.precision + "')");
}

}  // namespace dalr
