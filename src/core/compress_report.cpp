// The compress job's report stage (compress_plan.hpp): the JSON report and the summary.
#include <cmath>
#include <sstream>

#include "common/split_list.hpp"
#include "core/compress_plan.hpp"
#include "dalr/backend.hpp"
#include "io/atomic_file.hpp"

namespace dalr::compress_job {

namespace {

// Multiply-adds per image (conv: per output position times its positions) before and
// after: m n against k (m + n), or k n for a pruning (its next layer's saving aside).
template <typename T>
json flops_json(const LayerJob<T>& j, Method method) {
  const int64_t m = j.l.w.rows, n = j.l.w.cols, k = j.rank;
  const int64_t positions = j.conv ? j.geometry.positions() : 1;
  const int64_t before = positions * m * n;
  const int64_t after = positions * k * (is_pruning(method) ? n : m + n);
  return {{"per", j.conv ? "image" : "sample"},
          {"positions", positions},
          {"before", before},
          {"after", after},
          {"kept_fraction", double(after) / double(before)}};
}

// A conv layer's shape: what the patches are and where the layer runs.
json conv_json(const ConvGeometry& g, int64_t c_out) {
  return {{"in", g.channels},
          {"out", c_out},
          {"kernel", {g.kernel_h, g.kernel_w}},
          {"stride", g.stride},
          {"pad", g.pad},
          {"dilation", g.dilation},
          {"input", {g.channels, g.height, g.width}},
          {"output", {c_out, g.out_height(), g.out_width()}}};
}

// A layer's fields of the report (beside its error, ranks and lambda-auto parts).
template <typename T>
void layer_json(const Plan& p, const LayerJob<T>& j, json& r) {
  const Method method = p.method;
  const int64_t m = j.l.w.rows, n = j.l.w.cols;
  const int64_t before = m * n + m, after = params_after(method, m, n, j.rank);
  r["layer"] = {{"name", j.name}, {"m", m}, {"n", n}, {"had_bias", j.l.had_bias}};
  r["kind"] = j.conv ? "conv" : "fc";
  if (j.conv) r["layer"]["conv"] = conv_json(j.geometry, m);
  r["flops"] = flops_json(j, method);
  if (p.sequential) r["statistics_through"] = j.upstream;
  r["method"] = method_name(method);
  r["rank"] = j.rank;
  r["lambda"] = needs_gram(method) ? json(j.lambda) : json(nullptr);
  r["lambda_rel"] = needs_gram(method) && !p.o.lambda ? json(j.lambda_rel) : json(nullptr);
  r["params"] = {
      {"before", before},
      {"after", after},
      {"kept_fraction", double(after) / double(before)},
      {"kept_fraction_weights",
       is_pruning(method) ? double(j.rank) / double(m) : double(j.rank * (m + n)) / double(m * n)}};
  r["energy_kept"] = j.fac.energy_kept;
  if (!j.fac.eigensolver.empty()) {  // dalr, dalr-exact: what found A
    json e = {{"ran", j.fac.eigensolver}};
    if (j.fac.eigensolver == "subspace") e["steps"] = j.fac.eigensolver_steps;
    if (!j.fac.eigensolver_note.empty()) e["note"] = j.fac.eigensolver_note;
    r["eigensolver"] = e;
  }
  r["samples"] = j.st.count();
  if (is_pruning(method)) r["kept_units"] = j.fac.kept_units;
}

// An error that overflowed is null in the JSON, never a number, and gets a warning.
void flag_non_finite(const Plan& p, const std::string& layer, const char* key, json& r,
                     std::vector<std::string>& warnings) {
  if (!r.contains(key) || r[key].is_null()) return;
  bool bad = false;
  for (const char* f : {"abs", "rel", "ref_norm"}) {
    json& v = r[key][f];
    if (v.is_number() && !std::isfinite(v.get<double>())) v = nullptr, bad = true;
  }
  if (bad)
    warnings.push_back("layer '" + layer + "': the reconstruction error (" + key +
                       ") is not finite: the computation overflowed; " +
                       overflow_advice(p.precision));
}

std::string error_text(const json& v) {
  return v.is_number() ? fmt(v.get<double>()) : std::string("not finite");
}

template <typename T>
void layer_summary(const Plan& p, const LayerJob<T>& j, const json& r, std::ostream& s) {
  const Method method = p.method;
  const ConvGeometry& g = j.geometry;
  s << "layer " << j.name << " (" << j.l.w.rows << " x " << j.l.w.cols;
  if (j.conv)
    s << ": conv " << g.channels << " -> " << j.l.w.rows << ", " << g.kernel_h << "x" << g.kernel_w
      << " kernel, " << g.out_height() << "x" << g.out_width() << " positions";
  s << "), " << j.st.count() << (j.conv ? " patches" : " samples") << "\n";
  if (!j.upstream.empty())
    s << "statistics through the network with " << join_list(j.upstream, ", ") << " compressed\n";
  s << "method " << method_name(method) << ", " << (is_pruning(method) ? "kept units " : "rank ")
    << j.rank;
  if (needs_gram(method)) s << ", lambda " << fmt(j.lambda);
  const double before = r["params"]["before"].get<double>(),
               after = r["params"]["after"].get<double>();
  s << "\nparameters " << r["params"]["before"] << " -> " << r["params"]["after"] << " ("
    << fmt(100.0 * after / before, 3) << "% kept), "
    << (is_pruning(method) ? "activation mass kept " : "spectral energy kept ")
    << fmt(100.0 * j.fac.energy_kept, 4) << "%\n";
  if (j.conv)
    s << "multiply-adds per image " << fmt(r["flops"]["before"].get<double>(), 6) << " -> "
      << fmt(r["flops"]["after"].get<double>(), 6) << " ("
      << fmt(100.0 * r["flops"]["kept_fraction"].get<double>(), 3) << "% kept)\n";
  if (!r["error_train"].is_null())
    s << "reconstruction error (train): " << error_text(r["error_train"]["abs"]) << " (relative "
      << error_text(r["error_train"]["rel"]) << ")\n";
  if (r.contains("error_test"))
    s << "reconstruction error (test):  " << error_text(r["error_test"]["abs"]) << " (relative "
      << error_text(r["error_test"]["rel"]) << ")\n";
}

void joint_summary(const json& jr, std::ostream& s) {
  s << "joint search: ranks " << jr["ranks"].dump() << ", "
    << fmt(100.0 * jr["kept_fraction"].get<double>(), 3) << "% of the weights ("
    << fmt(100.0 * jr["flops_kept_fraction"].get<double>(), 3)
    << "% of the multiply-adds) kept, top-1 " << fmt(100.0 * jr["top1"].get<double>(), 4)
    << "% (uncompressed " << fmt(100.0 * jr["base_top1"].get<double>(), 4) << "%), "
    << jr["evaluations"] << " evaluations\n";
  if (jr["budget_comparison"].contains("top1"))
    s << "--budget at the same fraction: ranks " << jr["budget_comparison"]["ranks"].dump()
      << ", top-1 " << fmt(100.0 * jr["budget_comparison"]["top1"].get<double>(), 4) << "%\n";
}

// --budget: what it counted, the ranks and the share kept.
void budget_summary(const json& b, std::ostream& s) {
  const bool flops = b["by"] == "flops";
  s << "budget: " << fmt(100.0 * b["fraction"].get<double>(), 4) << "% of the layers' "
    << (flops ? "multiply-adds per image" : "weights") << ", ranks " << b["ranks"].dump() << " ("
    << fmt(100.0 * b["kept_fraction"].get<double>(), 4) << "% kept"
    << (b.contains("spectra") ? ", allocated from the original network's spectra" : "") << ")\n";
}

}  // namespace

template <typename T>
CompressResult make_report(const Plan& p, const std::vector<LayerJob<T>>& jobs,
                           const Backend& backend, JobOutput& out) {
  const CompressOptions& o = p.o;
  json& rep = out.rep;
  std::vector<json> layers;
  for (const auto& j : jobs) {
    layers.push_back(j.rep);
    layer_json(p, j, layers.back());
    for (const char* key : {"error_train", "error_test"})
      flag_non_finite(p, j.name, key, layers.back(), out.warnings);
  }
  // One layer: its fields at the top level; several: a "layers" array as well.
  for (auto& [k, v] : layers.front().items()) rep[k] = v;
  if (jobs.size() > 1) rep["layers"] = layers;
  rep["precision"] = precision_name(p.precision);
  rep["device"] = backend.name();
  rep["openblas_core"] = cpu_kernel_family();  // the CPU kernels (see cpu/blas_core.hpp)
  rep["timing_s"] = out.timing;
  rep["memory"] = memory_report(p);
  rep["warnings"] = out.warnings;
  rep["out"] = o.out;

  std::ostringstream s;
  for (size_t i = 0; i < jobs.size(); ++i) layer_summary(p, jobs[i], layers[i], s);
  if (rep.contains("budget")) budget_summary(rep["budget"], s);
  if (rep.contains("joint")) joint_summary(rep["joint"], s);
  s << "wrote " << o.out << " in " << fmt(out.timing["total"].get<double>(), 3) << " s\n";
  CompressResult res;
  res.warnings = out.warnings;
  res.summary = s.str();
  res.report_json = rep.dump(2);
  if (!o.report.empty()) out.staged.push_back(stage_text_file(o.report, res.report_json + "\n"));
  return res;
}

template CompressResult make_report(const Plan&, const std::vector<LayerJob<float>>&,
                                    const Backend&, JobOutput&);
template CompressResult make_report(const Plan&, const std::vector<LayerJob<double>>&,
                                    const Backend&, JobOutput&);

}  // namespace dalr::compress_job
