#include "dalr/sweep.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <numeric>

#include "common/checked.hpp"
#include "common/finite.hpp"
#include "core/head.hpp"
#include "core/job_common.hpp"
#include "core/stage_progress.hpp"
#include "core/stats_binding.hpp"
#include "core/stream.hpp"
#include "core/sweep_report.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/solver.hpp"
#include "io/atomic_file.hpp"

namespace dalr {

namespace {

void check_options(const SweepOptions& o) {
  if (o.model.empty()) throw Error("--model is required");
  if (o.layer.empty()) throw Error("--layer is required (e.g. --layer classifier.0)");
  if (o.layer.find(',') != std::string::npos) throw Error("sweep takes a single --layer");
  if (o.methods.empty()) throw Error("--methods is required (e.g. --methods dalr,svd,prune-mean)");
  for (const auto& m : o.methods) method_from_name(m);  // throws listing the valid names
  for (size_t i = 0; i < o.methods.size(); ++i)
    for (size_t j = i + 1; j < o.methods.size(); ++j)
      if (o.methods[i] == o.methods[j]) throw Error("--methods names '" + o.methods[i] + "' twice");
  if (o.ranks.empty()) throw Error("--ranks is required (e.g. --ranks 32,64,128)");
  for (size_t i = 0; i < o.ranks.size(); ++i)
    for (size_t j = i + 1; j < o.ranks.size(); ++j)
      if (o.ranks[i] == o.ranks[j])
        throw Error("--ranks names " + std::to_string(o.ranks[i]) + " twice");
  for (int64_t k : o.ranks)
    if (k < 1)
      throw Error("rank " + std::to_string(k) + " is out of range: every rank must be at least 1");
  if (o.test.empty())
    throw Error("--test DIR is required: the labelled test split the accuracy is measured on");
  if (o.data.empty() == o.stats_in.empty())
    throw Error(o.data.empty() ? "--data DIR (the training split) or --stats FILE is required"
                               : "give --data or --stats, not both");
  if (!o.out.empty() &&
      (o.out.back() == '/' || std::filesystem::is_directory(std::filesystem::path(o.out))))
    throw Error("--out is a PREFIX for PREFIX.csv, PREFIX.md, ... but '" + o.out +
                "' names a folder: give a name inside it (e.g. " +
                (o.out.back() == '/' ? o.out : o.out + "/") + "fc6)");
  check_batch_and_workers(o.batch, o.workers);
  if (o.limit < 0) throw Error("--limit must be >= 0");
  if (o.test_limit < 0) throw Error("--test-limit must be >= 0");
  check_lambda_rel(o.lambda_rel);
  for (const auto& [name, path] : {std::pair<const char*, std::string>{"--model", o.model},
                                   {"--test", o.test},
                                   {"--data", o.data},
                                   {"--stats", o.stats_in}})
    if (!path.empty() && !std::filesystem::exists(path))
      throw Error(std::string(name) + ": " + path + " does not exist");
  if (!o.out.empty())
    for (const auto& p : sweep_output_paths(o.out)) {
      for (const auto& in : {o.model, o.test, o.data, o.stats_in})
        if (!in.empty() && same_file(in, p))
          throw Error("--out " + o.out + " would overwrite the input " + in);
      AtomicFile probe(p);  // fails now, not after the long passes
    }
}

struct Network {
  Arch arch;
  size_t layer = 0, next = 0;  // the layer's index; pruning: the next linear's index
  bool conv = false;           // a conv layer: m = c_out by n = c_in kh kw, on its patches
  NextLayer next_layer;        // pruning: its weights, whose kept columns the point keeps
};

Network find_layers(const Arch& arch, const SweepOptions& o, bool pruning) {
  Network net;
  net.arch = arch;
  const auto& ls = arch.layers;
  net.layer = ls.size();
  for (size_t i = 0; i < ls.size(); ++i)
    if (ls[i].name == o.layer) net.layer = i;
  if (net.layer == ls.size() ||
      (ls[net.layer].type != LayerType::Linear && ls[net.layer].type != LayerType::Conv))
    throw Error("layer '" + o.layer + "' is not a linear or conv layer of the architecture");
  net.conv = ls[net.layer].type == LayerType::Conv;
  if (!pruning) return net;
  if (net.conv)
    throw Error("conv layer '" + o.layer +
                "': pruning a convolution's filters is not implemented: drop prune-mean/prune-max "
                "from --methods");
  for (size_t i = net.layer + 1; i < ls.size(); ++i) {
    if (ls[i].type == LayerType::Linear) {
      net.next = i;
      return net;
    }
    if (ls[i].type != LayerType::Relu && ls[i].type != LayerType::Dropout) break;
  }
  throw Error("pruning '" + o.layer +
              "' needs a following linear layer (with only relu/dropout between) whose input "
              "columns shrink with it; drop prune-mean/prune-max from --methods");
}

// Pass 1: the training split's statistics (or the saved ones).
template <typename T>
LayerStats<T> training_stats(const SweepOptions& o, const Arch& arch, const SafetensorsFile& model,
                             const Network& net, const Matrix<T>& w, const std::vector<T>& b,
                             Backend& backend, SweepResult& r) {
  const int64_t m = w.rows, n = w.cols;
  LayerStats<T> st;
  if (!o.stats_in.empty()) {
    std::map<std::string, std::string> meta;
    st = load_layer_stats<T>(o.stats_in, o.layer, m, n, &meta);
    check_stats_binding(meta, o.stats_in, model, &arch, o.layer, r.warnings);
  } else {
    const std::unique_ptr<Forward<T>> fwd = make_forward<T>(backend, arch, model);
    DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet};
    std::unique_ptr<BatchSource> src = open_data(d, arch.input);
    auto acc = net.conv ? patch_accumulator(backend,
                                            conv_geometry(arch, net.layer, src->channels(),
                                                          src->height(), src->width()),
                                            w, b)
                        : backend.stats(n, m, &w, &b, o.batch);
    try {
      stream_statistics(*fwd, *src, {o.layer}, {acc.get()}, d);
      st = acc->finish();
    } catch (const Error& e) {
      throw with_precision_hint(e, backend.precision());
    }
    if (src->skipped())
      r.warnings.push_back("skipped " + std::to_string(src->skipped()) +
                           " training images (first: " + src->first_skip_reason() + ")");
  }
  if (st.count() == 0) throw Error("no training samples: the statistics are empty");
  return st;
}

// A point's set-up: what it keeps, and why it is skipped (rank too large, no saving).
SweepPoint new_point(Method method, int64_t k, int64_t m, int64_t n, double lambda) {
  SweepPoint p;
  p.method = method_name(method);
  p.rank = k;
  p.kept = is_pruning(method) ? units_for_rank(m, n, k) : k;
  p.kept_fraction =
      is_pruning(method) ? double(p.kept) / double(m) : double(k * (m + n)) / double(m * n);
  p.lambda = needs_gram(method) ? lambda : 0;
  if (k > std::min(m, n)) {
    p.skipped = true;
    p.note = "rank " + std::to_string(k) + " exceeds min(m, n) = " + std::to_string(std::min(m, n));
  } else if (k * (m + n) >= m * n) {
    p.skipped = true;
    p.note = "rank " + std::to_string(k) +
             " saves no parameters: k (m + n) = " + std::to_string(k * (m + n)) +
             " >= m n = " + std::to_string(m * n);
  }
  return p;
}

// What every point needs: the layer, its statistics, the test features and the scorer.
template <typename T>
struct SweepContext {
  const SweepOptions& o;
  const Matrix<T>& w;
  const std::vector<T>& b;
  const LayerStats<T>& st;
  const Network& net;
  const Features& feat;
  const std::vector<int64_t>& base_pred;
  const Forward<float>& head;
  Backend& backend;
  StageRates& rates;
};

// One (method, rank) point: solve, error, and the network's scores with the factors
// substituted. Returns the factors for the spectrum.
template <typename T>
Factors<T> measure_point(const SweepContext<T>& c, Method method, Eigensolver es, SweepPoint& p) {
  auto ts = Clock::now();
  const SolveOptions opt{method, p.kept, p.lambda, es};
  const int64_t m = c.w.rows, n = c.w.cols;
  StageProgress line(
      "sweep point (" + solve_description(opt, m, n, c.rates.host()) + ", and its error",
      solve_flops(opt, m, n, c.rates.host()) + error_flops(m, n, p.kept, 0), c.rates, c.o.quiet);
  const Factors<T> fac = c.backend.solve(opt, c.w, c.b, c.st);
  const ReconError e = c.backend.reconstruction_error(c.st, c.w, c.b, fac);
  line.finish();
  p.solve_s = seconds_since(ts);
  p.error_abs = e.abs;
  p.error_rel = e.rel;
  p.energy_kept = fac.energy_kept;
  ts = Clock::now();
  const std::vector<Substitution<float>> subs =
      is_pruning(method) ? pruned_substitutions(c.o.layer, fac, c.w.rows, c.net.next_layer)
                         : std::vector<Substitution<float>>{factored_substitution(c.o.layer, fac)};
  const Scores s = score(c.feat, c.base_pred, nullptr, [&](const float* x, int64_t cols) {
    return c.head.run_from(c.o.layer, x, cols, false, subs);
  });
  p.head_s = seconds_since(ts);
  p.top1 = s.top1;
  p.top5 = s.top5;
  p.agreement = s.agreement;
  return fac;
}

template <typename T>
SweepResult run(const SweepOptions& o, Backend& backend) {
  const auto t_all = Clock::now();
  check_options(o);
  std::vector<Method> methods;
  for (const auto& name : o.methods) methods.push_back(method_from_name(name));
  const bool any_pruning = std::any_of(methods.begin(), methods.end(), is_pruning);

  SweepResult r;
  r.device = backend.name();
  r.precision = precision_name(backend.precision());
  SafetensorsFile model(o.model);
  const Arch arch = load_arch(model, o.arch, o.input_size);
  Network net = find_layers(arch, o, any_pruning);
  const LayerSpec& spec = arch.layers[net.layer];
  const int64_t m = spec.out, n = net.conv ? spec.in * spec.kernel * spec.kernel : spec.in;
  r.m = m;
  r.n = n;
  r.conv = net.conv;
  r.positions = net.conv ? conv_geometry(arch, net.layer, arch.input.channels, arch.input.crop[0],
                                         arch.input.crop[1])
                               .positions()
                         : 1;
  // Every rank skipped (too large, or saving nothing) would make an empty table after
  // both passes: say so before them.
  std::string why;
  bool any_point = false;
  for (int64_t k : o.ranks) {
    const SweepPoint p = new_point(methods.front(), k, m, n, 0);
    any_point |= !p.skipped;
    why += (why.empty() ? "" : "; ") + p.note;
  }
  if (!any_point)
    throw Error("every rank is skipped for the " + std::to_string(m) + " x " + std::to_string(n) +
                " layer '" + o.layer + "' (" + why + ")" +
                ((m * n - 1) / (m + n) >= 1
                     ? ": give ranks up to " + std::to_string((m * n - 1) / (m + n))
                     : ": no rank of this layer saves parameters"));
  const Matrix<T> w = from_row_major(model.read<T>(o.layer + ".weight").data(), m, n);
  const std::vector<T> b =
      spec.bias ? model.read<T>(o.layer + ".bias") : std::vector<T>(static_cast<size_t>(m), T(0));
  check_layer_finite(o.layer, w, b);
  if (any_pruning) {
    const LayerSpec& nl = arch.layers[net.next];
    net.next_layer.name = nl.name;
    net.next_layer.rows = nl.out;
    net.next_layer.w = model.read_f32(nl.name + ".weight");
    if (nl.bias) net.next_layer.b = model.read_f32(nl.name + ".bias");
  }

  auto t0 = Clock::now();
  const LayerStats<T> st = training_stats(o, arch, model, net, w, b, backend, r);
  r.train_samples = st.count();
  r.stats_s = seconds_since(t0);

  // Pass 2: the test split's features at the layer's input, and the uncompressed scores.
  t0 = Clock::now();
  const DataOptions td{o.test, o.workers, o.test_limit, o.shuffle, o.seed, o.batch, o.quiet};
  const Features feat = cache_features(td, o.layer, "--test", arch, model, backend, r.warnings);
  r.test_images = feat.count;
  // The candidates run on the CPU forward pass (on either device), with the activations
  // stored as the precision stores them, so a point is `evaluate --device cpu` of the
  // compressed model, bit for bit.
  const std::unique_ptr<Backend> cpu = scoring_backend(backend.precision());
  const std::unique_ptr<Forward<float>> head = cpu->forward_f32(arch, model);
  std::vector<int64_t> base_pred;
  const Scores base = score(feat, {}, &base_pred, [&](const float* x, int64_t cols) {
    return head->run_from(o.layer, x, cols);
  });
  r.base_top1 = base.top1;
  r.base_top5 = base.top5;
  r.features_s = seconds_since(t0);

  const double lambda = o.lambda ? *o.lambda : default_lambda(st, o.lambda_rel);
  StageRates rates(backend);
  const SweepContext<T> c{o, w, b, st, net, feat, base_pred, *head, backend, rates};
  // svd-bc ranks by the same singular values as svd: its curve only when svd is absent.
  const bool svd_swept = std::find(methods.begin(), methods.end(), Method::Svd) != methods.end();
  for (Method method : methods) {
    bool spectrum_kept = false;
    for (int64_t k : o.ranks) {
      SweepPoint p = new_point(method, k, m, n, lambda);
      if (!p.skipped) {
        // The spectrum's point: the whole spectrum, unless the user asked for top-k.
        const Eigensolver es = !spectrum_kept && o.eigensolver == Eigensolver::Auto
                                   ? Eigensolver::Full
                                   : o.eigensolver;
        const Factors<T> fac = measure_point(c, method, es, p);
        if (!spectrum_kept && !is_pruning(method) && !(method == Method::SvdBc && svd_swept)) {
          r.spectra.emplace_back(p.method, fac.spectrum);
          spectrum_kept = true;
        }
      }
      r.points.push_back(p);
    }
  }
  r.total_s = seconds_since(t_all);
  if (!o.out.empty()) write_sweep_files(o, r);
  return r;
}

}  // namespace

SweepResult sweep(const SweepOptions& opt, Backend& backend) {
  return with_precision(backend.precision(),
                        [&](auto tag) { return run<decltype(tag)>(opt, backend); });
}

}  // namespace dalr
