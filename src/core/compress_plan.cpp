// The compress job's plan (compress_plan.hpp): every option checked once, before any
// data is read.
#include "core/compress_plan.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "common/checked.hpp"
#include "core/job_common.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/npy.hpp"
#include "io/atomic_file.hpp"

namespace dalr::compress_job {

std::string fmt(double v, int prec) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

namespace {

// Exactly one way of choosing the ranks, each with its range.
RankMode check_rank_mode(const CompressOptions& o) {
  if (o.rank && *o.rank < 1)
    throw Error("rank " + std::to_string(*o.rank) + " is out of range: it must be at least 1");
  const int modes =
      o.rank.has_value() + o.keep.has_value() + o.budget.has_value() + o.max_drop.has_value();
  if (modes > 1) throw Error("give one of --rank, --keep, --budget or --max-drop, not both");
  if (modes == 0)
    throw Error("give --rank K or --keep FRACTION (or --budget FRACTION, or --max-drop POINTS)");
  if (o.keep && !(*o.keep > 0 && *o.keep <= 1)) throw Error("--keep must be a fraction in (0, 1]");
  if (o.budget && !(*o.budget > 0 && *o.budget <= 1))
    throw Error("--budget must be a fraction in (0, 1]");
  return o.rank     ? RankMode::Fixed
         : o.keep   ? RankMode::Keep
         : o.budget ? RankMode::Budget
                    : RankMode::Joint;
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

// --max-drop's options, or their absence without it.
void check_joint(const CompressOptions& o, Method method) {
  if (!o.max_drop) {
    if (!o.val.empty() || !o.test.empty())
      throw Error(std::string(o.val.empty() ? "--test" : "--val") + " is used with --max-drop");
    return;
  }
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
}

void check_numbers(const CompressOptions& o, Method method) {
  check_batch_and_workers(o.batch, o.workers);
  if (o.limit < 0) throw Error("--limit must be >= 0");
  if (o.val_limit < 0) throw Error("--val-limit must be >= 0");
  if (o.round_rank < 0) throw Error("--round-rank must be >= 1");
  if (o.budget && (is_pruning(method) || o.lambda_auto))
    throw Error("--budget allocates ranks of factorisations (not pruning) with a fixed lambda");
  if (o.budget_by != "params" && o.budget_by != "flops")
    throw Error("--budget-by must be params or flops (got '" + o.budget_by + "')");
  if (!o.budget && o.budget_by != "params") throw Error("--budget-by is used with --budget");
  if (o.lambda_auto && !needs_gram(method))
    throw Error("--lambda auto applies to dalr and dalr-exact (got --method " + o.method + ")");
  if (o.lambda_auto && o.lambda) throw Error("give --lambda VALUE or --lambda auto, not both");
  check_lambda_rel(o.lambda_rel);
  if (needs_gram(method) && o.lambda && !(*o.lambda >= 0 && std::isfinite(*o.lambda)))
    throw Error("lambda must be a finite number >= 0 (got " + std::to_string(*o.lambda) + ")");
}

std::vector<std::string> split_layers(const std::string& s) {
  const std::vector<std::string> out = split_list(s);
  if (out.empty()) throw Error("--layer is required (e.g. --layer classifier.0)");
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = i + 1; j < out.size(); ++j)
      if (out[i] == out[j]) throw Error("--layer names '" + out[i] + "' twice");
  return out;
}

// Where the activations come from, and what goes with which source.
void check_sources(const CompressOptions& o, size_t layers) {
  const bool stream = o.acts == "stream";
  if (layers > 1 && !stream)
    throw Error("several layers (--layer " + o.layer +
                ") need --acts stream: an activation file holds one layer's inputs");
  if (!stream && !o.data.empty()) throw Error("--data is used with --acts stream");
  if (stream && o.data.empty())
    throw Error("--acts stream needs --data DIR (an image folder) or --data FILE.npy");
  if (stream && !o.stats_in.empty())
    throw Error("--stats cannot be combined with --acts stream yet");
  if (layers > 1 && !o.acts_test.empty()) throw Error("--acts-test needs a single --layer");
}

// "12x34" for a shape.
std::string dims(const std::vector<int64_t>& shape) {
  std::string s;
  for (int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

// The layers --layer can name: 2-D (fully connected) and 4-D (conv) weights.
std::string list_layers(const SafetensorsFile& f, bool with_conv = true) {
  std::string s;
  for (const auto& t : f.tensors()) {
    const std::string suffix = ".weight";
    const bool conv = t.shape.size() == 4;
    if ((t.shape.size() == 2 || (conv && with_conv)) && t.name.size() > suffix.size() &&
        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      s += (s.empty() ? "" : ", ") + t.name.substr(0, t.name.size() - suffix.size()) + " (" +
           (conv ? "conv " : "") + dims(t.shape) + ")";
    }
  }
  return s.empty() ? "none" : s;
}

LayerPlan plan_layer(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* wi = f.find(name + ".weight");
  if (!wi)
    throw Error("unknown layer '" + name + "': " + f.path() + " has no tensor '" + name +
                ".weight' (layers found: " + list_layers(f) + ")");
  if (wi->shape.size() != 2 && wi->shape.size() != 4)
    throw Error("layer '" + name + "' is neither fully connected nor a convolution: " + name +
                ".weight has " + std::to_string(wi->shape.size()) +
                " dimensions, expected 2 (m x n) or 4 (c_out x c_in x kh x kw)");
  for (int64_t d : wi->shape)
    if (d <= 0) throw Error("layer '" + name + "' has an empty weight");
  LayerPlan l;
  l.name = name;
  l.conv = wi->shape.size() == 4;
  l.weight_shape = wi->shape;
  l.m = wi->shape[0];
  l.n = checked_mul(wi->shape[1], wi->shape.size() == 4 ? wi->shape[2] * wi->shape[3] : 1,
                    "the conv layer's patch size");
  l.file_bytes = double(wi->end - wi->begin);
  if (const TensorInfo* bi = f.find(name + ".bias")) {
    if (bi->shape != std::vector<int64_t>{l.m})
      throw Error(name + ".bias has the wrong shape: expected [" + std::to_string(l.m) + "]");
    l.file_bytes += double(bi->end - bi->begin);
  }
  return l;
}

// The architecture: the model's own, a preset, or none (then only --acts FILE works).
void plan_arch(Plan& p) {
  const CompressOptions& o = p.o;
  p.have_arch = p.model->metadata().count("dalr.arch") || !o.arch.empty();
  if (o.input_size != 0 && !p.have_arch)
    throw Error("--input-size applies to an --arch preset: give --arch too");
  if (p.have_arch) p.arch = load_arch(*p.model, o.arch, o.input_size);
  if (p.stream && !p.have_arch)
    throw Error(o.model + " has no dalr.arch metadata: pass --arch (" + [] {
      std::string v;
      for (const auto& n : vgg_preset_names()) v += (v.empty() ? "" : ", ") + n;
      return v;
    }() + ") for a plain torchvision state dict");
  if (!p.stream &&
      !std::any_of(p.layers.begin(), p.layers.end(), [](const LayerPlan& l) { return l.conv; }))
    return;
  if (!p.have_arch)
    throw Error("conv layer '" + p.layers.front().name + "': " + o.model +
                " has no dalr.arch metadata, which gives the convolution's stride, padding and "
                "input size: pass --arch for a torchvision VGG state dict");
  for (LayerPlan& l : p.layers) {
    const LayerType want = l.conv ? LayerType::Conv : LayerType::Linear;
    size_t& at = l.arch_index;
    for (at = 0; at < p.arch.layers.size(); ++at)
      if (p.arch.layers[at].name == l.name && p.arch.layers[at].type == want) break;
    if (at == p.arch.layers.size())
      throw Error("layer '" + l.name + "' is not a " + (l.conv ? "conv" : "linear") +
                  " layer of the architecture");
  }
}

// Conv layers: their geometry, and what does not apply to them, refused naming why.
void plan_conv(Plan& p) {
  const CompressOptions& o = p.o;
  std::string convs;
  for (LayerPlan& l : p.layers) {
    if (!l.conv) continue;
    convs += (convs.empty() ? "'" : ", '") + l.name + "'";
    const Arch& a = p.arch;
    l.geometry = conv_geometry(a, l.arch_index, a.input.channels, a.input.crop[0], a.input.crop[1]);
  }
  if (convs.empty()) return;
  const std::string what = "conv layer " + convs + ": ";
  if (is_pruning(p.method))
    throw Error(what + "--method " + o.method +
                " prunes fc output units (and the next fc layer's input columns); pruning a "
                "convolution's filters is not implemented: use dalr, dalr-exact, svd or svd-bc");
  if (!p.stream && !o.acts.empty())
    throw Error(what +
                "its samples are the patches of its input feature maps, which an "
                "activation file (--acts FILE) does not hold: use --acts stream --data DIR "
                "(or --stats FILE saved by --save-stats)");
  if (!o.acts_test.empty())
    throw Error(what +
                "--acts-test is an activation file of an fc layer's inputs; the "
                "statistics of a conv layer come from --acts stream");
  if (o.lambda_auto)
    throw Error(what +
                "--lambda auto holds out every 10th sample, but neighbouring patches "
                "overlap, so the held-out error would not measure generalisation: give "
                "--lambda or --lambda-rel");
  if (o.sequential != "asymmetric" && o.sequential != "symmetric")
    throw Error("--sequential must be asymmetric or symmetric (got '" + o.sequential + "')");
  // --max-drop scores each candidate on the original network's statistics and writes
  // the factors it scored: one pass, as --independent.
  p.sequential = p.stream && p.layers.size() > 1 && !o.independent && !o.max_drop;
  if (!p.sequential) return;
  p.asymmetric = o.sequential == "asymmetric" && needs_gram(p.method);
  if (p.asymmetric && (o.lambda ? !(*o.lambda > 0) : !(o.lambda_rel > 0)))
    throw Error(what +
                "the asymmetric sequential fit solves with C^ + lambda I by Cholesky and "
                "needs lambda > 0: give --lambda-rel or --lambda above 0, or use "
                "--sequential symmetric");
  if (o.comm && o.comm->size() > 1)
    throw Error(what +
                "sequential compression needs each layer's factors on every process "
                "before the next pass: add --independent, or run one process");
}

// An activation file's width against the layer's n (its header only); the bytes of its
// values (0 without a file).
int64_t check_width(const std::string& path, const LayerPlan& l) {
  if (path.empty() || path == "stream") return 0;
  const NpyReader r(path);
  if (r.cols() != l.n)
    throw Error(path + " has " + std::to_string(r.cols()) + " features per sample, but layer '" +
                l.name + "' takes n = " + std::to_string(l.n) + " inputs");
  if (r.rows() == 0)
    throw Error(path + " holds no samples (0 rows): there is nothing to fit or measure on");
  return r.descr().back() - '0';  // "<f4": 4 (NpyReader accepts f2, f4, f8 only)
}

// Pruning: the layer whose inputs are the pruned layer's outputs.
void plan_next_layer(Plan& p) {
  const CompressOptions& o = p.o;
  if (o.next_layer.empty()) return;
  if (!is_pruning(p.method))
    throw Error("--next-layer only applies to the pruning methods (prune-mean, prune-max)");
  if (p.layers.size() > 1) throw Error("--next-layer needs a single --layer");
  p.next = p.model->find(o.next_layer + ".weight");
  if (!p.next)
    throw Error("unknown --next-layer '" + o.next_layer + "': no tensor '" + o.next_layer +
                ".weight' (fully connected layers found: " + list_layers(*p.model, false) + ")");
  const LayerPlan& first = p.layers.front();
  if (p.next->shape.size() != 2 || p.next->shape[1] != first.m)
    throw Error("--next-layer '" + o.next_layer + "' does not take layer '" + first.name +
                "' output: its weight is not (*, " + std::to_string(first.m) + ")");
}

// --rank and --keep: each layer's rank from its shape, checked against it.
void plan_fixed_ranks(Plan& p) {
  if (p.mode != RankMode::Fixed && p.mode != RankMode::Keep) return;
  for (LayerPlan& l : p.layers) {
    if (p.mode == RankMode::Keep)
      l.rank = rank_for_keep(p.method, l.m, l.n, *p.o.keep);
    else
      l.rank = is_pruning(p.method) ? units_for_rank(l.m, l.n, *p.o.rank) : *p.o.rank;
    const int64_t k = rounded_rank(p, l.m, l.n, l.rank);
    const int64_t max_rank = is_pruning(p.method) ? l.m : std::min(l.m, l.n);
    if (k > max_rank)
      throw Error(std::string(is_pruning(p.method) ? "kept units " : "rank ") + std::to_string(k) +
                  " is out of range: it must be between 1 and " + std::to_string(max_rank) +
                  " for a " + std::to_string(l.m) + " x " + std::to_string(l.n) + " layer" +
                  (l.conv ? " ('" + l.name + "', conv " + dims(l.weight_shape) + ": c_out x c_in " +
                                "kh kw)"
                          : std::string()));
  }
}

}  // namespace

int64_t rounded_rank(const Plan& p, int64_t m, int64_t n, int64_t requested) {
  if (p.o.round_rank <= 1) return requested;
  // Tensor-core friendly: up to a multiple of round_rank, never past the maximum.
  const int64_t cap = is_pruning(p.method) ? m : std::min(m, n), r = p.o.round_rank;
  return std::min(cap, (requested + r - 1) / r * r);
}

Plan make_plan(const CompressOptions& o, Precision precision, bool on_cpu,
               const MemoryBudget& budget) {
  Plan p;
  p.o = o;
  p.precision = precision;
  p.on_cpu = on_cpu;
  p.budget = budget;
  p.mode = check_rank_mode(o);
  check_paths(o);
  p.method = method_from_name(o.method);
  check_numbers(o, p.method);
  check_joint(o, p.method);
  p.stream = o.acts == "stream";
  const std::vector<std::string> names = split_layers(o.layer);
  check_sources(o, names.size());
  p.model = std::make_unique<SafetensorsFile>(o.model);
  for (const auto& name : names) p.layers.push_back(plan_layer(*p.model, name));
  plan_arch(p);
  plan_conv(p);
  p.acts_elem = check_width(o.acts, p.layers.front());
  check_width(o.acts_test, p.layers.front());
  plan_next_layer(p);
  plan_fixed_ranks(p);
  plan_solve(p);
  check_memory(p);  // the last check: it needs every choice above
  return p;
}

}  // namespace dalr::compress_job
