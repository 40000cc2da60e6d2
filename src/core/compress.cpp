#include "dalr/compress.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/finite.hpp"
#include "core/head.hpp"
#include "core/job_common.hpp"
#include "cpu/recon.hpp"
#include "core/stream.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/joint.hpp"
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
    throw Error(
        "--acts FILE.npy, --acts stream --data DIR, or --stats FILE is required: the layer's "
        "input activations");
  const std::vector<std::pair<const char*, std::string>> inputs = {
      {"--model", o.model},
      {"--acts", o.acts == "stream" ? std::string() : o.acts},
      {"--acts-test", o.acts_test},
      {"--stats", o.stats_in},
      {"--data", o.data}};
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
struct LayerJob {
  std::string name;
  Layer<T> l;
  LayerStats<T> st;    // all samples (for --lambda auto: first the fit part)
  LayerStats<T> held;  // --lambda auto: every 10th sample, held out to choose lambda
  Factors<T> fac;
  int64_t rank = 0;
  double lambda = 0;
  json rep;
};

// --lambda auto: every 10th sample goes to a held-out accumulator, the rest to the fit
// one, so lambda is chosen on data the solve did not see, without a second pass.
template <typename T>
class SplitAccumulator final : public StatsAccumulator<T> {
 public:
  SplitAccumulator(std::unique_ptr<StatsAccumulator<T>> fit,
                   std::unique_ptr<StatsAccumulator<T>> held, int64_t n)
      : fit_(std::move(fit)), held_(std::move(held)), n_(n) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    check_finite(x, n_, cols, ldx, first_index);  // names the sample before the split
    fit_buf_.clear();
    held_buf_.clear();
    for (int64_t j = 0; j < cols; ++j) {
      auto& dst = (first_index + j) % 10 == 9 ? held_buf_ : fit_buf_;
      dst.insert(dst.end(), x + j * ldx, x + j * ldx + n_);
    }
    const int64_t nf = static_cast<int64_t>(fit_buf_.size()) / n_;
    const int64_t nh = static_cast<int64_t>(held_buf_.size()) / n_;
    if (nf) fit_->add(fit_buf_.data(), nf, n_, fit_count_);
    if (nh) held_->add(held_buf_.data(), nh, n_, held_count_);
    fit_count_ += nf;
    held_count_ += nh;
  }
  void merge(const LayerStats<T>& earlier) override { fit_->merge(earlier); }  // no split
  LayerStats<T> result() override {
    LayerStats<T> all = fit_->result();
    all.merge(held_->result());
    return all;
  }
  LayerStats<T> fit() { return fit_->finish(); }
  LayerStats<T> held() { return held_->finish(); }

 private:
  std::unique_ptr<StatsAccumulator<T>> fit_, held_;
  int64_t n_, fit_count_ = 0, held_count_ = 0;
  std::vector<T> fit_buf_, held_buf_;
};

template <typename T>
std::unique_ptr<StatsAccumulator<T>> make_accumulator(const CompressOptions& o, const Layer<T>& l,
                                                      Backend& backend) {
  const int64_t m = l.w.rows, n = l.w.cols;
  if (!o.lambda_auto) return backend.stats(n, m, &l.w, &l.b, o.batch);
  return std::make_unique<SplitAccumulator<T>>(backend.stats(n, m, &l.w, &l.b, o.batch),
                                               backend.stats(n, m, &l.w, &l.b, o.batch), n);
}

// The statistics of a job once its samples are in (split for --lambda auto).
template <typename T>
void take_statistics(const CompressOptions& o, StatsAccumulator<T>& acc, LayerJob<T>& j) {
  if (!o.lambda_auto) {
    j.st = acc.finish();
    return;
  }
  auto& split = static_cast<SplitAccumulator<T>&>(acc);
  j.st = split.fit();
  j.held = split.held();
  if (j.held.count() == 0)
    throw Error("--lambda auto needs at least 10 samples (every 10th is held out)");
}

template <typename T>
void gather_stats(const CompressOptions& o, LayerJob<T>& job, Backend& backend, json& rep) {
  const Layer<T>& l = job.l;
  const int64_t m = l.w.rows, n = l.w.cols;
  auto acc = make_accumulator(o, l, backend);
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
  if (first == 0) throw Error("no activation samples: the activation file is empty");
  take_statistics(o, *acc, job);
}

template <typename T>
std::vector<TensorOut> output_tensors(const SafetensorsFile& f, const CompressOptions& o,
                                      const std::vector<LayerJob<T>>& jobs, json& rep) {
  const TensorInfo* next = nullptr;
  const LayerJob<T>& first = jobs.front();
  if (!o.next_layer.empty()) {
    if (!is_pruning(first.fac.method))
      throw Error("--next-layer only applies to the pruning methods (prune-mean, prune-max)");
    if (jobs.size() > 1) throw Error("--next-layer needs a single --layer");
    next = f.find(o.next_layer + ".weight");
    if (!next)
      throw Error("unknown --next-layer '" + o.next_layer + "': no tensor '" + o.next_layer +
                  ".weight' (fully connected layers found: " + list_layers(f) + ")");
    if (next->shape.size() != 2 || next->shape[1] != first.l.w.rows)
      throw Error("--next-layer '" + o.next_layer + "' does not take layer '" + first.name +
                  "' output: its weight is not (*, " + std::to_string(first.l.w.rows) + ")");
  }
  std::vector<TensorOut> out;
  for (const TensorInfo& t : f.tensors()) {
    const LayerJob<T>* job = nullptr;
    bool is_bias = false;
    for (const auto& j : jobs) {
      if (t.name == j.name + ".weight") job = &j;
      if (t.name == j.name + ".bias") is_bias = true;
    }
    if (is_bias) continue;
    if (job) {
      const std::string& name = job->name;
      const Factors<T>& fac = job->fac;
      const int64_t m = job->l.w.rows, n = job->l.w.cols, k = fac.rank;
      if (is_pruning(fac.method)) {
        out.push_back(
            TensorOut::convert(name + ".weight", {k, n}, to_row_major(fac.b), DType::F32));
        out.push_back(TensorOut::convert(name + ".bias", {k}, fac.bias, DType::F32));
      } else {
        out.push_back(
            TensorOut::convert(name + ".0.weight", {k, n}, to_row_major(fac.b), DType::F32));
        out.push_back(
            TensorOut::convert(name + ".1.weight", {m, k}, to_row_major(fac.a), DType::F32));
        out.push_back(TensorOut::convert(name + ".1.bias", {m}, fac.bias, DType::F32));
      }
      continue;
    }
    if (next && t.name == next->name) {
      const int64_t rows = next->shape[0], m = first.l.w.rows, k = first.fac.rank;
      std::vector<float> src = f.read_f32(t.name), dst(static_cast<size_t>(rows * k));
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t r = 0; r < k; ++r) dst[i * k + r] = src[i * m + first.fac.kept_units[r]];
      out.push_back(TensorOut::f32(t.name, {rows, k}, dst));
      rep["next_layer"] = {
          {"name", o.next_layer}, {"shape_before", next->shape}, {"shape_after", {rows, k}}};
      continue;
    }
    out.push_back(TensorOut::borrow(f, t));
  }
  return out;
}

// The architecture after the replacement, so that a compressed model runs (and
// compresses) again; nullopt-like empty Arch when the model carries none.
template <typename T>
void update_arch(Arch& arch, const CompressOptions& o, const std::vector<LayerJob<T>>& jobs,
                 std::vector<std::string>& warnings) {
  for (const auto& j : jobs) {
    if (!is_pruning(j.fac.method)) {
      arch = replace_linear_with_factors(arch, j.name, j.rank);
      continue;
    }
    bool next_fixed = false;
    for (size_t i = 0; i < arch.layers.size(); ++i) {
      LayerSpec& l = arch.layers[i];
      if (l.name == j.name) l.out = j.rank;
      if (!o.next_layer.empty() && l.name == o.next_layer) {
        l.in = j.rank;
        next_fixed = true;
      }
    }
    if (!next_fixed)
      warnings.push_back("pruned layer '" + j.name +
                         "' without --next-layer: the following layer still expects " +
                         std::to_string(j.l.w.rows) + " inputs, so the model no longer runs");
  }
}

std::vector<std::string> split_layers(const std::string& s) {
  const std::vector<std::string> out = split_list(s);
  if (out.empty()) throw Error("--layer is required (e.g. --layer classifier.0)");
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = i + 1; j < out.size(); ++j)
      if (out[i] == out[j]) throw Error("--layer names '" + out[i] + "' twice");
  return out;
}

std::string stats_path(const std::string& path, const std::string& layer, size_t count) {
  if (count == 1) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "." + layer + p.extension().string())).string();
}

json recon_json(const ReconError& e) {
  return {{"abs", e.abs}, {"rel", e.rel}, {"ref_norm", e.ref}, {"samples", e.samples}};
}

template <typename T>
void stream_all(const CompressOptions& o, const SafetensorsFile& model, const Arch& arch,
                std::vector<LayerJob<T>>& jobs, Backend& backend, json& rep,
                std::vector<std::string>& warnings) {
  if (!o.stats_in.empty()) throw Error("--stats cannot be combined with --acts stream yet");
  std::unique_ptr<Forward<T>> fwd = make_forward<T>(backend, arch, model);
  std::vector<std::unique_ptr<StatsAccumulator<T>>> accs;
  std::vector<StatsAccumulator<T>*> raw;
  std::vector<std::string> names;
  for (auto& j : jobs) {
    bool linear = false;
    for (const auto& l : arch.layers) linear |= l.name == j.name && l.type == LayerType::Linear;
    if (!linear) throw Error("layer '" + j.name + "' is not a linear layer of the architecture");
    accs.push_back(make_accumulator(o, j.l, backend));
    raw.push_back(accs.back().get());
    names.push_back(j.name);
  }
  DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet};
  std::unique_ptr<BatchSource> src = open_data(d, arch.input);
  try {
    stream_statistics(*fwd, *src, names, raw, d);
    for (size_t i = 0; i < jobs.size(); ++i) take_statistics(o, *accs[i], jobs[i]);
  } catch (const Error& e) {
    throw with_precision_hint(e, o.precision);
  }
  rep["data"] = {{"path", o.data},       {"images", src->size()}, {"skipped", src->skipped()},
                 {"shuffle", o.shuffle}, {"seed", o.seed},        {"limit", o.limit}};
  if (src->skipped() > 0)
    warnings.push_back("skipped " + std::to_string(src->skipped()) + " of " +
                       std::to_string(src->size()) +
                       " images that could not be read (first: " + src->first_skip_reason() + ")");
  if (jobs.front().st.count() == 0) throw Error("no images in " + o.data);
}

// compress --max-drop: the greedy joint search on the validation split's features at
// the first layer's input. Each option costs the (cached) solves and one forward pass
// from there with the factored layers substituted (run_from), as the written model runs.
template <typename T>
std::vector<int64_t> joint_ranks(const CompressOptions& o, const SafetensorsFile& model,
                                 const Arch& arch, const std::vector<LayerJob<T>>& jobs,
                                 Method method, Backend& backend, json& rep,
                                 std::vector<std::string>& warnings) {
  const auto t0 = Clock::now();
  // The layers in network order: the features are the first one's input.
  std::vector<size_t> order(jobs.size()), at(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    for (size_t li = 0; li < arch.layers.size(); ++li)
      if (arch.layers[li].name == jobs[i].name) at[i] = li;
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return at[a] < at[b]; });
  const size_t first = order.front();

  std::vector<int64_t> full(jobs.size());
  std::vector<double> lambdas(jobs.size());
  std::vector<std::map<int64_t, Substitution<float>>> cache(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    full[i] = std::min(jobs[i].l.w.rows, jobs[i].l.w.cols);
    lambdas[i] = o.lambda ? *o.lambda : default_lambda(jobs[i].st, o.lambda_rel);
  }
  double t_solve = 0;
  auto layer_at = [&](size_t i, int64_t k) -> const Substitution<float>& {
    auto it = cache[i].find(k);
    if (it != cache[i].end()) return it->second;
    const auto ts = Clock::now();
    const Factors<T> f =
        backend.solve({method, k, lambdas[i]}, jobs[i].l.w, jobs[i].l.b, jobs[i].st);
    t_solve += seconds_since(ts);
    return cache[i].emplace(k, factored_substitution(jobs[i].name, f)).first->second;
  };

  const DataOptions d{o.val, o.workers, o.val_limit, o.shuffle, o.seed, o.batch, o.quiet};
  const Features feat =
      cache_features(d, jobs[first].name, "--val", arch, model, backend, warnings);
  const double features_s = seconds_since(t0);
  // The CPU forward pass with 16-bit storage as the precision asks, so the search scores
  // what `evaluate --device cpu --precision` gives on the written model.
  const std::unique_ptr<Backend> cpu = make_cpu_backend(act_storage_for(o.precision));
  const std::unique_ptr<Forward<float>> head = cpu->forward_f32(arch, model);
  const Scores base = score(feat, {}, nullptr, [&](const float* x, int64_t cols) {
    return head->run_from(jobs[first].name, x, cols);
  });
  // The network's output with the layers at `ranks` (full rank: the layer as it is).
  auto logits_for = [&](const std::vector<int64_t>& ranks) {
    std::vector<Substitution<float>> subs;
    for (size_t i = 0; i < jobs.size(); ++i)
      if (ranks[i] != full[i]) subs.push_back(layer_at(i, ranks[i]));
    return [&, subs](const float* x, int64_t cols) {
      return head->run_from(jobs[first].name, x, cols, false, subs);
    };
  };
  int64_t evaluations = 0;
  auto accuracy = [&](const std::vector<int64_t>& ranks) {
    ++evaluations;
    return score(feat, {}, nullptr, logits_for(ranks)).top1;
  };
  const auto ts = Clock::now();
  const JointSearchResult res =
      greedy_joint_search(full, base.top1, *o.max_drop, o.shrink, accuracy);
  const double search_s = seconds_since(ts);

  // Kept weights of the factored layers, k (m + n) of m n each.
  auto kept = [&](const std::vector<int64_t>& ranks, json& per_layer) {
    int64_t weights = 0, total = 0;
    per_layer = json::object();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const int64_t m = jobs[i].l.w.rows, n = jobs[i].l.w.cols;
      weights += ranks[i] * (m + n);
      total += m * n;
      per_layer[jobs[i].name] = double(ranks[i] * (m + n)) / double(m * n);
    }
    return double(weights) / double(total);
  };
  json steps = json::array();
  for (const auto& st : res.steps) {
    json tried = json::array();
    for (size_t c = 0; c < st.tried.size(); ++c)
      tried.push_back({{"ranks", st.tried[c]}, {"top1", st.accuracy[c]}});
    steps.push_back({{"tried", tried},
                     {"choice", st.choice < 0 ? json(nullptr) : json(st.choice)},
                     {"accepted", st.choice >= 0}});
  }
  json per_layer, budget_layers;
  const double fraction = kept(res.ranks, per_layer);
  std::vector<std::string> names;
  for (const auto& j : jobs) names.push_back(j.name);
  rep["joint"] = {{"layers", names},
                  {"max_drop", *o.max_drop},
                  {"shrink", o.shrink},
                  {"val", {{"path", o.val}, {"images", feat.count}, {"limit", o.val_limit}}},
                  {"base_top1", base.top1},
                  {"base_top5", base.top5},
                  {"start_ranks", full},
                  {"steps", steps},
                  {"ranks", res.ranks},
                  {"kept_fraction_layers", per_layer},
                  {"kept_fraction", fraction},
                  {"top1", res.accuracy},
                  {"drop_points", 100.0 * (base.top1 - res.accuracy)},
                  {"evaluations", res.evaluations}};
  if (!o.test.empty()) {
    // The held-out test split, untouched by the search: the result and the original.
    const DataOptions dt{o.test, o.workers, 0, false, 0, o.batch, o.quiet};
    const Features tf =
        cache_features(dt, jobs[first].name, "--test", arch, model, backend, warnings);
    const Scores tb = score(tf, {}, nullptr, [&](const float* x, int64_t cols) {
      return head->run_from(jobs[first].name, x, cols);
    });
    const Scores tr = score(tf, {}, nullptr, logits_for(res.ranks));
    rep["joint"]["test"] = {{"path", o.test},  {"images", tf.count}, {"base_top1", tb.top1},
                            {"top1", tr.top1}, {"top5", tr.top5},    {"base_top5", tb.top5}};
  }
  // For comparison: --budget's allocation (spectra alone) at the same kept fraction.
  try {
    std::vector<std::pair<int64_t, int64_t>> shapes;
    std::vector<std::vector<double>> spectra;
    for (size_t i = 0; i < jobs.size(); ++i) {
      shapes.push_back({jobs[i].l.w.rows, jobs[i].l.w.cols});
      spectra.push_back(
          backend.solve({method, 1, lambdas[i]}, jobs[i].l.w, jobs[i].l.b, jobs[i].st).spectrum);
    }
    const std::vector<int64_t> b = allocate_ranks(shapes, spectra, fraction);
    const double acc = accuracy(b);
    rep["joint"]["budget_comparison"] = {{"fraction", fraction},
                                         {"ranks", b},
                                         {"kept_fraction", kept(b, budget_layers)},
                                         {"kept_fraction_layers", budget_layers},
                                         {"top1", acc}};
  } catch (const Error& e) {
    rep["joint"]["budget_comparison"] = {{"error", e.what()}};
  }
  for (size_t i = 0; i < jobs.size(); ++i)
    if (res.ranks[i] == full[i])
      warnings.push_back("--max-drop: the search left '" + jobs[i].name +
                         "' at full rank; it is written factored at rank " +
                         std::to_string(full[i]) + " (no saving)");
  rep["joint"]["timing_s"] = {{"features", features_s},
                              {"search", search_s},
                              {"solve", t_solve},
                              {"total", seconds_since(t0)}};
  rep["joint"]["head_evaluations"] = evaluations;
  return res.ranks;
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
  if (o.round_rank < 0) throw Error("--round-rank must be >= 1");
  const bool joint = o.max_drop.has_value();
  if ((o.rank > 0) + (o.keep > 0) + (o.budget > 0) + joint != 1)
    throw Error(o.rank < 0 ? "--rank must be at least 1"
                           : "give exactly one of --rank K, --keep FRACTION, --budget FRACTION or "
                             "--max-drop POINTS");
  if (joint) {
    if (is_pruning(method) || o.lambda_auto)
      throw Error("--max-drop searches ranks of factorisations (not pruning) with a fixed lambda");
    if (o.acts != "stream")
      throw Error("--max-drop needs --acts stream --data DIR: the network runs on the images");
    if (o.val.empty())
      throw Error("--max-drop needs --val DIR: the labelled split the accuracy is measured on");
    if (!std::filesystem::exists(o.val)) throw Error("--val: " + o.val + " does not exist");
    if (*o.max_drop < 0) throw Error("--max-drop must be at least 0 (percentage points)");
    if (!(o.shrink > 0 && o.shrink < 1)) throw Error("--shrink must be in (0, 1)");
    if (o.round_rank > 1) throw Error("--round-rank does not combine with --max-drop");
    if (!o.test.empty() && !std::filesystem::exists(o.test))
      throw Error("--test: " + o.test + " does not exist");
  } else if (!o.val.empty() || !o.test.empty()) {
    throw Error(std::string(o.val.empty() ? "--test" : "--val") + " is used with --max-drop");
  }
  if (o.budget > 0 && (is_pruning(method) || o.lambda_auto))
    throw Error("--budget allocates ranks of factorisations (not pruning) with a fixed lambda");
  if (o.lambda_auto && !needs_gram(method))
    throw Error("--lambda auto applies to dalr and dalr-exact (got --method " + o.method + ")");
  if (o.lambda_auto && o.lambda) throw Error("give --lambda VALUE or --lambda auto, not both");
  const bool stream = o.acts == "stream";
  const std::vector<std::string> names = split_layers(o.layer);
  if (names.size() > 1 && !stream)
    throw Error("several layers (--layer " + o.layer +
                ") need --acts stream: an activation file holds one layer's inputs");
  if (!stream && !o.data.empty()) throw Error("--data is used with --acts stream");

  auto t0 = Clock::now();
  SafetensorsFile model(o.model);
  std::vector<LayerJob<T>> jobs;
  for (const auto& name : names) {
    jobs.emplace_back();
    jobs.back().name = name;
    jobs.back().l = load_layer<T>(model, name);
  }
  // The architecture: the model's own, a preset, or none (then only --acts FILE works).
  Arch arch;
  bool have_arch = model.metadata().count("dalr.arch") || !o.arch.empty();
  if (have_arch) arch = load_arch(model, o.arch);
  if (stream && !have_arch)
    throw Error(o.model + " has no dalr.arch metadata: pass --arch (" + [] {
      std::string v;
      for (const auto& n : vgg_preset_names()) v += (v.empty() ? "" : ", ") + n;
      return v;
    }() + ") for a plain torchvision state dict");
  timing["load_model"] = seconds_since(t0);

  t0 = Clock::now();
  if (stream) {
    stream_all(o, model, arch, jobs, backend, rep, res.warnings);
  } else {
    gather_stats<T>(o, jobs.front(), backend, rep);
  }
  timing["statistics"] = seconds_since(t0);
  if (!o.save_stats.empty()) {
    t0 = Clock::now();
    for (const auto& j : jobs)
      j.st.save(stats_path(o.save_stats, j.name, jobs.size()),
                {{"dalr.layer", j.name}, {"dalr.model", o.model}});
    timing["save_stats"] = seconds_since(t0);
  }

  double t_solve = 0, t_error = 0;
  std::vector<int64_t> budget_ranks;
  if (o.budget > 0) {
    // Each layer's spectrum (a rank-1 solve returns all of it), then one allocation.
    t0 = Clock::now();
    std::vector<std::pair<int64_t, int64_t>> shapes;
    std::vector<std::vector<double>> spectra;
    for (const auto& j : jobs) {
      const double lam = o.lambda ? *o.lambda : default_lambda(j.st, o.lambda_rel);
      shapes.push_back({j.l.w.rows, j.l.w.cols});
      spectra.push_back(backend.solve({method, 1, lam}, j.l.w, j.l.b, j.st).spectrum);
    }
    budget_ranks = allocate_ranks(shapes, spectra, o.budget);
    t_solve += seconds_since(t0);
    int64_t weights = 0, total = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      weights += budget_ranks[i] * (shapes[i].first + shapes[i].second);
      total += shapes[i].first * shapes[i].second;
    }
    rep["budget"] = {{"fraction", o.budget},
                     {"ranks", budget_ranks},
                     {"weights_kept", weights},
                     {"weights_before", total},
                     {"kept_fraction", double(weights) / double(total)}};
  }
  if (joint) {
    t0 = Clock::now();
    budget_ranks = joint_ranks(o, model, arch, jobs, method, backend, rep, res.warnings);
    timing["joint"] = seconds_since(t0);
  }
  for (size_t ji = 0; ji < jobs.size(); ++ji) {
    auto& j = jobs[ji];
    const int64_t m = j.l.w.rows, n = j.l.w.cols;
    j.rank = !budget_ranks.empty() ? budget_ranks[ji] : o.rank;
    if (o.keep > 0)
      j.rank = rank_for_keep(method, m, n, o.keep);
    else if (is_pruning(method))
      j.rank = units_for_rank(m, n, o.rank);
    if (o.round_rank > 1) {
      // Tensor-core friendly: up to a multiple of round_rank, never past the maximum.
      const int64_t requested = j.rank, cap = is_pruning(method) ? m : std::min(m, n);
      j.rank = std::min(cap, (requested + o.round_rank - 1) / o.round_rank * o.round_rank);
      j.rep["round_rank"] = {{"multiple", o.round_rank},
                             {"rank_requested", requested},
                             {"extra_params", params_after(method, m, n, j.rank) -
                                                  params_after(method, m, n, requested)}};
    }
    if (!is_pruning(method) && j.rank >= 1 && j.rank * (m + n) >= m * n)
      warn("rank " + std::to_string(j.rank) + " saves no parameters: k (m + n) = " +
           std::to_string(j.rank * (m + n)) + " >= m n = " + std::to_string(m * n));
    if (needs_gram(method) && j.rank > j.st.count())
      warn("rank " + std::to_string(j.rank) + " exceeds the " + std::to_string(j.st.count()) +
           " activation samples: directions beyond the data are arbitrary");
    t0 = Clock::now();
    double lambda_rel = o.lambda_rel;
    if (o.lambda_auto) {
      // The grid around the default, each solved on the fit part and measured on the
      // held-out part; then the chosen relative lambda on all the samples.
      json curve = json::array();
      double best = -1;
      for (double rel : {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
        const double lam = default_lambda(j.st, rel);
        const Factors<T> f = backend.solve({method, j.rank, lam}, j.l.w, j.l.b, j.st);
        const double err = backend.reconstruction_error(j.held, j.l.w, j.l.b, f).rel;
        curve.push_back({{"lambda_rel", rel}, {"lambda", lam}, {"held_out_rel_error", err}});
        if (best < 0 || err < best) best = err, lambda_rel = rel;
      }
      j.rep["lambda_auto"] = {{"chosen_lambda_rel", lambda_rel},
                              {"fit_samples", j.st.count()},
                              {"held_out_samples", j.held.count()},
                              {"curve", curve}};
      j.st.merge(j.held);
      j.held = LayerStats<T>();
    }
    j.lambda = o.lambda ? *o.lambda : default_lambda(j.st, lambda_rel);
    j.fac = backend.solve({method, j.rank, j.lambda}, j.l.w, j.l.b, j.st);
    t_solve += seconds_since(t0);

    t0 = Clock::now();
    if (o.no_error) {
      j.rep["error_train"] = nullptr;
    } else if (!o.acts.empty() && !stream) {
      NpyReader r(o.acts);
      j.rep["error_train"] = recon_json(reconstruction_error(r, j.l.w, j.l.b, j.fac, o.batch));
    } else {
      j.rep["error_train"] = recon_json(backend.reconstruction_error(j.st, j.l.w, j.l.b, j.fac));
    }
    if (!o.acts_test.empty()) {
      if (jobs.size() > 1) throw Error("--acts-test needs a single --layer");
      NpyReader r(o.acts_test);
      if (r.cols() != n)
        throw Error(o.acts_test + " has " + std::to_string(r.cols()) +
                    " features per sample, but layer '" + j.name +
                    "' takes n = " + std::to_string(n) + " inputs");
      j.rep["error_test"] = recon_json(reconstruction_error(r, j.l.w, j.l.b, j.fac, o.batch));
    }
    t_error += seconds_since(t0);

    const int64_t before = m * n + m, after = params_after(method, m, n, j.rank);
    j.rep["layer"] = {{"name", j.name}, {"m", m}, {"n", n}, {"had_bias", j.l.had_bias}};
    j.rep["method"] = method_name(method);
    j.rep["rank"] = j.rank;
    j.rep["lambda"] = needs_gram(method) ? json(j.lambda) : json(nullptr);
    j.rep["lambda_rel"] = needs_gram(method) && !o.lambda ? json(lambda_rel) : json(nullptr);
    j.rep["params"] = {
        {"before", before},
        {"after", after},
        {"kept_fraction", double(after) / double(before)},
        {"kept_fraction_weights", is_pruning(method) ? double(j.rank) / double(m)
                                                     : double(j.rank * (m + n)) / double(m * n)}};
    j.rep["energy_kept"] = j.fac.energy_kept;
    j.rep["samples"] = j.st.count();
    if (is_pruning(method)) j.rep["kept_units"] = j.fac.kept_units;
  }
  timing["solve"] = t_solve;
  timing["error"] = t_error;

  t0 = Clock::now();
  std::map<std::string, std::string> meta = model.metadata();
  if (have_arch) {
    update_arch(arch, o, jobs, res.warnings);
    for (const auto& [k, v] : arch_metadata(arch)) meta[k] = v;
  }
  std::string ranks;
  for (const auto& j : jobs) ranks += (ranks.empty() ? "" : ",") + std::to_string(j.rank);
  meta["dalr.method"] = method_name(method);
  meta["dalr.layer"] = o.layer;
  meta["dalr.rank"] = ranks;
  meta["dalr.lambda"] = needs_gram(method) ? fmt(jobs.front().lambda, 17) : "0";
  meta["dalr.source"] = std::filesystem::path(o.model).filename().string();
  meta["dalr.acts"] = stream ? "stream:" + o.data : (o.acts.empty() ? o.stats_in : o.acts);
  meta["dalr.samples"] = std::to_string(jobs.front().st.count());
  write_safetensors(o.out, output_tensors(model, o, jobs, rep), meta);
  timing["write"] = seconds_since(t0);
  timing["total"] = seconds_since(t_all);

  // One layer: its fields at the top level; several: a "layers" array as well.
  for (auto& [k, v] : jobs.front().rep.items()) rep[k] = v;
  if (jobs.size() > 1) {
    rep["layers"] = json::array();
    for (const auto& j : jobs) rep["layers"].push_back(j.rep);
  }
  rep["precision"] = o.precision;
  rep["device"] = backend.name();
  rep["openblas_core"] = cpu_kernel_family();  // the CPU kernels (see cpu/blas_core.hpp)
  rep["timing_s"] = timing;
  rep["warnings"] = res.warnings;
  rep["out"] = o.out;

  std::ostringstream s;
  for (const auto& j : jobs) {
    const json& r = j.rep;
    s << "layer " << j.name << " (" << j.l.w.rows << " x " << j.l.w.cols << "), " << j.st.count()
      << " samples\n"
      << "method " << method_name(method) << ", " << (is_pruning(method) ? "kept units " : "rank ")
      << j.rank;
    if (needs_gram(method)) s << ", lambda " << fmt(j.lambda);
    const double before = r["params"]["before"].get<double>(),
                 after = r["params"]["after"].get<double>();
    s << "\nparameters " << r["params"]["before"] << " -> " << r["params"]["after"] << " ("
      << fmt(100.0 * after / before, 3) << "% kept), "
      << (is_pruning(method) ? "activation mass kept " : "spectral energy kept ")
      << fmt(100.0 * j.fac.energy_kept, 4) << "%\n";
    if (!r["error_train"].is_null())
      s << "reconstruction error (train): " << fmt(r["error_train"]["abs"].get<double>())
        << " (relative " << fmt(r["error_train"]["rel"].get<double>()) << ")\n";
    if (r.contains("error_test"))
      s << "reconstruction error (test):  " << fmt(r["error_test"]["abs"].get<double>())
        << " (relative " << fmt(r["error_test"]["rel"].get<double>()) << ")\n";
  }
  if (rep.contains("joint")) {
    const json& jr = rep["joint"];
    s << "joint search: ranks " << jr["ranks"].dump() << ", "
      << fmt(100.0 * jr["kept_fraction"].get<double>(), 3) << "% of the weights kept, top-1 "
      << fmt(100.0 * jr["top1"].get<double>(), 4) << "% (uncompressed "
      << fmt(100.0 * jr["base_top1"].get<double>(), 4) << "%), " << jr["evaluations"]
      << " evaluations\n";
    if (jr["budget_comparison"].contains("top1"))
      s << "--budget at the same fraction: ranks " << jr["budget_comparison"]["ranks"].dump()
        << ", top-1 " << fmt(100.0 * jr["budget_comparison"]["top1"].get<double>(), 4) << "%\n";
  }
  s << "wrote " << o.out << " in " << fmt(timing["total"].get<double>(), 3) << " s\n";
  res.summary = s.str();
  res.report_json = rep.dump(2);
  if (!o.report.empty()) write_text_file(o.report, res.report_json + "\n");
  return res;
}

}  // namespace

CompressResult compress(const CompressOptions& opt, Backend& backend) {
  return with_precision(opt.precision, backend,
                        [&](auto tag) { return run<decltype(tag)>(opt, backend); });
}

}  // namespace dalr
