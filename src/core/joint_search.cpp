// compress --max-drop's search (compress_plan.hpp): the paper's greedy joint search,
// each candidate scored by the network runner (Forward::run_from with substitutions).
#include <algorithm>
#include <map>

#include "core/compress_plan.hpp"
#include "core/head.hpp"
#include "core/stream.hpp"
#include "dalr/error.hpp"
#include "dalr/joint.hpp"

namespace dalr::compress_job {

// compress --max-drop: the greedy joint search on the validation split's features at
// the first layer's input. Each option costs the (cached) solves and one forward pass
// from there with the factored layers substituted (run_from), as the written model runs,
// so any layers may lie between the compressed ones.
// About 140 lines: the search's set-up, its run and its report share the cached solves
// and scores; split, they would pass a dozen values between them.
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
        backend.solve({method, k, lambdas[i], o.eigensolver}, jobs[i].l.w, jobs[i].l.b, jobs[i].st);
    t_solve += seconds_since(ts);
    return cache[i].emplace(k, factored_substitution(jobs[i].name, f)).first->second;
  };

  const DataOptions d{o.val, o.workers, o.val_limit, o.shuffle, o.seed, o.batch, o.quiet};
  const Features feat =
      cache_features(d, jobs[first].name, "--val", arch, model, backend, warnings);
  const double features_s = seconds_since(t0);
  // The CPU forward pass with 16-bit storage as the precision asks, so the search scores
  // what `evaluate --device cpu --precision` gives on the written model.
  const std::unique_ptr<Backend> cpu = scoring_backend(backend.precision());
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
  // Multiply-adds per image of the factored layers (a conv layer's at its positions).
  auto flops_kept = [&](const std::vector<int64_t>& ranks) {
    double after = 0, before = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const double m = double(jobs[i].l.w.rows), n = double(jobs[i].l.w.cols);
      const double pos = jobs[i].conv ? double(jobs[i].geometry.positions()) : 1.0;
      after += pos * double(ranks[i]) * (m + n);
      before += pos * m * n;
    }
    return after / before;
  };
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
                  {"flops_kept_fraction", flops_kept(res.ranks)},
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
      spectra.push_back(backend
                            .solve({method, 1, lambdas[i], Eigensolver::Full}, jobs[i].l.w,
                                   jobs[i].l.b, jobs[i].st)
                            .spectrum);
    }
    const std::vector<int64_t> b = allocate_ranks(shapes, spectra, fraction);
    const double acc = accuracy(b);
    rep["joint"]["budget_comparison"] = {{"fraction", fraction},
                                         {"ranks", b},
                                         {"kept_fraction", kept(b, budget_layers)},
                                         {"kept_fraction_layers", budget_layers},
                                         {"flops_kept_fraction", flops_kept(b)},
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

template std::vector<int64_t> joint_ranks(const CompressOptions&, const SafetensorsFile&,
                                          const Arch&, const std::vector<LayerJob<float>>&, Method,
                                          Backend&, json&, std::vector<std::string>&);
template std::vector<int64_t> joint_ranks(const CompressOptions&, const SafetensorsFile&,
                                          const Arch&, const std::vector<LayerJob<double>>&, Method,
                                          Backend&, json&, std::vector<std::string>&);

}  // namespace dalr::compress_job
