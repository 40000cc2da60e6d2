// The compress job's middle stages (compress_plan.hpp): ranks, solve, error.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/compress_plan.hpp"
#include "dalr/error.hpp"
#include "dalr/npy.hpp"

namespace dalr::compress_job {

namespace {

// --budget: each layer's spectrum (a rank-1 solve with the full eigensolver returns all of
// it), then one allocation by the layers' weights or multiply-adds per image.
template <typename T>
std::vector<int64_t> budget_ranks(const Plan& p, const std::vector<LayerJob<T>>& jobs,
                                  Backend& backend, JobOutput& out, StageRates& rates) {
  const CompressOptions& o = p.o;
  const auto t0 = Clock::now();
  const bool by_flops = o.budget_by == "flops";
  std::vector<RankCost> costs;
  std::vector<std::vector<double>> spectra;
  for (const auto& j : jobs) {
    const int64_t m = j.l.w.rows, n = j.l.w.cols;
    const double positions = by_flops && j.conv ? double(j.geometry.positions()) : 1.0;
    costs.push_back({std::min(m, n), positions * double(m + n), positions * double(m) * double(n)});
    const double lam = o.lambda ? *o.lambda : default_lambda(j.st, o.lambda_rel);
    const SolveOptions opt{p.method, 1, lam, Eigensolver::Full};
    StageProgress line("spectrum " + j.name + " (" + solve_description(opt, m, n),
                       solve_flops(opt, m, n), rates, o.quiet);
    spectra.push_back(backend.solve(opt, j.l.w, j.l.b, j.st).spectrum);
    line.finish();
  }
  const std::vector<int64_t> ranks =
      allocate_ranks(costs, spectra, *o.budget, by_flops ? "multiply-adds" : "weights");
  out.solve_s += seconds_since(t0);
  double kept = 0, total = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    kept += double(ranks[i]) * costs[i].per_rank;
    total += costs[i].dense;
  }
  const std::string what = by_flops ? "flops" : "weights";
  out.rep["budget"] = {{"fraction", *o.budget},
                       {"by", o.budget_by},
                       {"ranks", ranks},
                       {what + "_kept", int64_t(kept)},
                       {what + "_before", int64_t(total)},
                       {"kept_fraction", kept / total}};
  return ranks;
}

// A layer's rank from the requested one: --round-rank, and the warnings about it.
template <typename T>
void set_rank(const Plan& p, LayerJob<T>& j, int64_t requested, JobOutput& out) {
  const int64_t m = j.l.w.rows, n = j.l.w.cols;
  j.rank = rounded_rank(p, m, n, requested);
  if (p.o.round_rank > 1)
    j.rep["round_rank"] = {{"multiple", p.o.round_rank},
                           {"rank_requested", requested},
                           {"extra_params", params_after(p.method, m, n, j.rank) -
                                                params_after(p.method, m, n, requested)}};
  if (!is_pruning(p.method) && j.rank >= 1 && j.rank * (m + n) >= m * n)
    out.warnings.push_back("rank " + std::to_string(j.rank) + " saves no parameters: k (m + n) = " +
                           std::to_string(j.rank * (m + n)) + " >= m n = " + std::to_string(m * n));
  if (needs_gram(p.method) && j.rank > j.st.count())
    out.warnings.push_back("rank " + std::to_string(j.rank) + " exceeds the " +
                           std::to_string(j.st.count()) +
                           " activation samples: directions beyond the data are arbitrary");
}

// --lambda auto: the grid around the default, each solved on the fit part and measured
// on the held-out part; then the chosen relative lambda on all the samples.
template <typename T>
double choose_lambda_rel(const Plan& p, LayerJob<T>& j, Backend& backend, StageRates& rates) {
  const int64_t m = j.l.w.rows, n = j.l.w.cols;
  const SolveOptions guess{p.method, j.rank, default_lambda(j.st, 1e-3), p.o.eigensolver};
  StageProgress line("lambda auto " + j.name + " (6 solves and held-out errors, " +
                         solve_description(guess, m, n, rates.host()),
                     6 * (solve_flops(guess, m, n, rates.host()) + error_flops(m, n, j.rank, 0)),
                     rates, p.o.quiet);
  json curve = json::array();
  double best = -1, chosen = p.o.lambda_rel;
  for (double rel : {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
    const double lam = default_lambda(j.st, rel);
    const Factors<T> f =
        backend.solve({p.method, j.rank, lam, p.o.eigensolver}, j.l.w, j.l.b, j.st);
    const double err = backend.reconstruction_error(j.held, j.l.w, j.l.b, f).rel;
    curve.push_back({{"lambda_rel", rel}, {"lambda", lam}, {"held_out_rel_error", err}});
    if (best < 0 || err < best) best = err, chosen = rel;
  }
  line.finish();
  j.rep["lambda_auto"] = {{"chosen_lambda_rel", chosen},
                          {"fit_samples", j.st.count()},
                          {"held_out_samples", j.held.count()},
                          {"curve", curve}};
  j.st.merge(j.held);
  j.held = LayerStats<T>();
  return chosen;
}

json recon_json(const ReconError& e) {
  return {{"abs", e.abs}, {"rel", e.rel}, {"ref_norm", e.ref}, {"samples", e.samples}};
}

}  // namespace

template <typename T>
void choose_ranks(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend, JobOutput& out,
                  StageRates& rates) {
  std::vector<int64_t> requested;
  const bool allocated =
      std::all_of(jobs.begin(), jobs.end(), [](const LayerJob<T>& j) { return j.allocated > 0; });
  if (p.mode == RankMode::Budget && allocated) {  // budget_ranks_first
    for (const auto& j : jobs) requested.push_back(j.allocated);
  } else if (p.mode == RankMode::Budget) {
    requested = budget_ranks(p, jobs, backend, out, rates);
  } else if (p.mode == RankMode::Joint) {
    const auto t0 = Clock::now();
    requested = joint_ranks(p.o, *p.model, p.arch, jobs, p.method, backend, out.rep, out.warnings);
    out.timing["joint"] = seconds_since(t0);
  } else {  // jobs may be a sequential pass's part of the plan's layers
    for (const auto& j : jobs)
      for (const LayerPlan& l : p.layers)
        if (l.name == j.name) requested.push_back(l.rank);
  }
  for (size_t i = 0; i < jobs.size(); ++i) set_rank(p, jobs[i], requested[i], out);
}

template <typename T>
void budget_ranks_first(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                        JobOutput& out, StageRates& rates) {
  if (!p.o.quiet)
    std::fprintf(stderr,
                 "--budget: the ranks from every layer's spectrum in one pass of the original "
                 "network, then the sequential passes at those ranks\n");
  collect_statistics(p, jobs, backend, out);
  out.timing["budget_statistics"] = out.timing["statistics"];
  const std::vector<int64_t> ranks = budget_ranks(p, jobs, backend, out, rates);
  out.rep["budget"]["spectra"] = "independent";  // from the original network's statistics
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].allocated = ranks[i];
    jobs[i].st = LayerStats<T>();
  }
}

template <typename T>
void solve_layer(const Plan& p, LayerJob<T>& j, Backend& backend, StageRates& rates) {
  j.lambda_rel = p.o.lambda_auto ? choose_lambda_rel(p, j, backend, rates) : p.o.lambda_rel;
  j.lambda = p.o.lambda ? *p.o.lambda : default_lambda(j.st, j.lambda_rel);
  const SolveOptions opt{p.method, j.rank, j.lambda, p.o.eigensolver};
  const int64_t m = j.l.w.rows, n = j.l.w.cols;
  if (j.asymmetric) {  // lambda from C^ (j.st), as the symmetric fit's
    StageProgress line("solve " + j.name + " (asymmetric, " + solve_description(opt, m, n),
                       solve_flops(opt, m, n), rates, p.o.quiet);  // on the host on every backend
    j.fac = backend.asymmetric_solve(opt, j.l.w, j.l.b, {&j.st, &j.orig, &j.cross});
    line.finish();
  } else if (j.x) {  // the sample-space solve (compress_solve.cpp chose it)
    const int64_t s = j.x->cols;
    StageProgress line(
        "solve " + j.name + " (" + solve_description_dual(opt, m, n, s, rates.host()),
        solve_flops_dual(opt, m, n, s, rates.host()), rates, p.o.quiet);
    j.fac = backend.solve_dual(opt, j.l.w, j.l.b, *j.x);
    line.finish();
  } else {
    StageProgress line("solve " + j.name + " (" + solve_description(opt, m, n, rates.host()),
                       solve_flops(opt, m, n, rates.host()), rates, p.o.quiet);
    j.fac = backend.solve(opt, j.l.w, j.l.b, j.st);
    line.finish();
  }
  // Before an error is measured from overflowed factors, and once for the write too:
  // these are the factors write_model writes (nothing non-finite is written).
  check_factors(p, j);
}

// The training error from the activation file when there is one (exact), else from the
// statistics on the backend; --acts-test's from its file.
template <typename T>
void measure_error(const Plan& p, LayerJob<T>& j, Backend& backend, StageRates& rates) {
  const CompressOptions& o = p.o;
  const int64_t m = j.l.w.rows, n = j.l.w.cols, k = j.rank;
  // A line per error: over the activation file's p samples, or from the statistics.
  auto line = [&](const char* what, int64_t samples) {
    return std::make_unique<StageProgress>(
        std::string(what) + " " + j.name + " (" +
            (samples
                 ? "over " + std::to_string(samples) + " samples)"
                 : "from the statistics, " + std::to_string(n) + " x " + std::to_string(n) + ")"),
        error_flops(m, n, k, samples), rates, o.quiet);
  };
  if (o.no_error) {
    j.rep["error_train"] = nullptr;
  } else if (j.asymmetric) {  // against the original network's outputs W X + b
    const auto l = line("training error", 0);
    j.rep["error_train"] =
        recon_json(backend.asymmetric_error({&j.st, &j.orig, &j.cross}, j.l.w, j.l.b, j.fac));
    j.rep["error_train"]["reference"] = "original outputs";
    l->finish();
  } else if (!o.acts.empty() && !p.stream) {
    NpyReader r(o.acts);
    const auto l = line("training error", r.rows());
    j.rep["error_train"] =
        recon_json(backend.reconstruction_error(r, j.l.w, j.l.b, j.fac, o.batch));
    l->finish();
  } else if (j.x) {  // streamed, kept for the dual: exact over the samples, C never formed
    const auto l = line("training error", j.x->cols);
    j.rep["error_train"] =
        recon_json(backend.reconstruction_error(*j.x, j.l.w, j.l.b, j.fac, o.batch));
    l->finish();
  } else {
    const auto l = line("training error", 0);
    j.rep["error_train"] = recon_json(backend.reconstruction_error(j.st, j.l.w, j.l.b, j.fac));
    l->finish();
  }
  if (!o.acts_test.empty()) {
    NpyReader r(o.acts_test);  // a single layer of the right width (the plan)
    const auto l = line("test error", r.rows());
    j.rep["error_test"] = recon_json(backend.reconstruction_error(r, j.l.w, j.l.b, j.fac, o.batch));
    l->finish();
  }
}

template <typename T>
void solve_layers(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend, JobOutput& out,
                  StageRates& rates) {
  for (auto& j : jobs) {
    auto t0 = Clock::now();
    solve_layer(p, j, backend, rates);
    out.solve_s += seconds_since(t0);
    t0 = Clock::now();
    measure_error(p, j, backend, rates);
    out.error_s += seconds_since(t0);
  }
}

#define DALR_COMPRESS_STAGES(T)                                                                  \
  template void choose_ranks(const Plan&, std::vector<LayerJob<T>>&, Backend&, JobOutput&,       \
                             StageRates&);                                                       \
  template void budget_ranks_first(const Plan&, std::vector<LayerJob<T>>&, Backend&, JobOutput&, \
                                   StageRates&);                                                 \
  template void solve_layer(const Plan&, LayerJob<T>&, Backend&, StageRates&);                   \
  template void measure_error(const Plan&, LayerJob<T>&, Backend&, StageRates&);                 \
  template void solve_layers(const Plan&, std::vector<LayerJob<T>>&, Backend&, JobOutput&,       \
                             StageRates&);
DALR_COMPRESS_STAGES(float)
DALR_COMPRESS_STAGES(double)
#undef DALR_COMPRESS_STAGES

}  // namespace dalr::compress_job
