// --solve: which layers the compress job solves in sample space (compress_plan.hpp), from
// p, n, the memory model and, on a GPU, the flop counts.
#include <algorithm>
#include <filesystem>
#include <limits>

#include "core/compress_plan.hpp"
#include "core/stage_progress.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/images.hpp"
#include "dalr/npy.hpp"

namespace dalr::compress_job {

namespace {

// The images a stream would take (--limit applied; a skipped image only lowers it).
int64_t count_images(const CompressOptions& o) {
  const int64_t all = std::filesystem::is_directory(o.data)
                          ? static_cast<int64_t>(list_image_folder(o.data, nullptr).size())
                          : NpyReader(o.data).rows();
  return o.limit > 0 ? std::min(o.limit, all) : all;
}

std::string count_text(int64_t p, int64_t n) {
  return "p = " + std::to_string(p) + " samples " + (p < n ? "<" : ">=") +
         " n = " + std::to_string(n) + " inputs";
}

bool host_fits(const Plan& p) {
  const MemoryBudget& b = p.budget;
  return !b.check || b.host_limit == 0 ||
         estimate_memory(memory_shape(p), b.baseline).host_peak() <= b.host_limit;
}

bool device_fits(const Plan& p) {
  const MemoryBudget& b = p.budget;
  return p.on_cpu || !b.check || b.device_free == 0 ||
         estimate_memory(memory_shape(p), b.baseline).device_peak() <= b.device_free;
}

// --solve dual with --acts stream: how many samples each layer may keep before C is
// formed, so that the kept samples and the statistics at the switch fit the host limit.
int64_t keep_budget(Plan& p) {
  const MemoryBudget& b = p.budget;
  if (!b.check || b.host_limit == 0) return std::numeric_limits<int64_t>::max();
  std::vector<int64_t> keep;
  for (LayerPlan& l : p.layers) keep.push_back(l.keep), l.keep = 0;
  const int64_t samples = p.samples;
  p.samples = 0;  // as if every layer switched at once with nothing kept
  const MemoryEstimate e = estimate_memory(memory_shape(p), b.baseline);
  p.samples = samples;
  double stats = 0, per_sample = 0;
  for (const StageMemory& s : e.stages)
    if (s.name == "statistics") stats = s.host_bytes();
  for (size_t i = 0; i < p.layers.size(); ++i) {
    p.layers[i].keep = keep[i];
    if (p.layers[i].dual)
      per_sample += double(p.layers[i].n) * (uses_double(p.precision) ? 8.0 : 4.0);
  }
  const double room = b.host_limit - b.baseline - stats;
  if (per_sample == 0) return std::numeric_limits<int64_t>::max();
  return room <= 0 ? 0 : static_cast<int64_t>(std::min(room / per_sample, 1e18));
}

// Auto on a GPU: the sample-space solve where it costs fewer flops than the statistics
// and the primal solve (not measured on a GPU yet; the CPU's rule is p < n alone).
bool dual_cheaper(const Plan& p, const LayerPlan& l) {
  const int64_t k = rounded_rank(p, l.m, l.n, l.rank);
  const SolveOptions opt{p.method, k, p.o.lambda ? *p.o.lambda : 1.0, p.o.eigensolver};
  const double n = double(l.n), m = double(l.m), s = double(p.samples);
  const double primal = solve_flops(opt, l.m, l.n) + n * n * s + 2 * m * n * s;  // + C, Y
  return solve_flops_dual(opt, l.m, l.n, p.samples) < primal;
}

void all_primal(Plan& p, const std::string& why) {
  for (LayerPlan& l : p.layers) l.dual = false, l.keep = 0, l.solve_why = why;
}

}  // namespace

const char* dual_refusal(const Plan& p) {
  const CompressOptions& o = p.o;
  return !needs_gram(p.method) ? "it applies to dalr and dalr-exact only"
         : !p.stream && o.acts.empty()
             ? "it needs the samples (--acts FILE or --acts stream), not statistics"
         : o.comm && o.comm->size() > 1 ? "several processes (mpirun) share statistics, not samples"
         : !o.stats_in.empty()          ? "--stats holds C, not the samples it came from"
         : !o.save_stats.empty()        ? "--save-stats saves C, which the dual never forms"
         : o.lambda_auto                ? "--lambda auto is not implemented for it"
         : p.mode == RankMode::Budget   ? "--budget is not implemented for it"
         : p.mode == RankMode::Joint    ? "--max-drop is not implemented for it"
                                        : nullptr;
}

void plan_solve(Plan& p) {
  const CompressOptions& o = p.o;
  if (o.solve != "auto" && o.solve != "primal" && o.solve != "dual")
    throw Error("--solve must be primal, dual or auto (got '" + o.solve + "')");
  const char* why = dual_refusal(p);
  // p, also for the memory check's remedies (a file's header; an image folder's listing).
  if (!why) p.samples = p.stream ? count_images(o) : NpyReader(o.acts).rows();
  if (o.solve == "primal") return all_primal(p, "--solve primal");
  const bool ask = o.solve == "dual";
  if (why) {
    if (ask) throw Error(std::string("--solve dual cannot be used here: ") + why);
    return all_primal(p, std::string("auto: the sample-space solve does not apply (") + why + ")");
  }
  for (LayerPlan& l : p.layers) {
    if (l.conv) {  // its samples would be every patch of every image
      const std::string why = "conv layer '" + l.name +
                              "': its samples are the patches of its input feature maps, "
                              "which the sample-space solve does not keep";
      if (ask) throw Error("--solve dual cannot be used here: " + why);
      l.dual = false, l.solve_why = "auto: " + why;
      continue;
    }
    const std::string counts = count_text(p.samples, l.n);
    l.dual = ask || p.samples < l.n;
    l.keep = p.stream ? l.n - 1 : 0;  // streaming keeps samples while they are fewer than n
    l.solve_why = (ask ? "--solve dual (" : "auto: ") + counts + (ask ? ")" : "");
  }
  if (ask) {
    if (!p.stream) return;
    const int64_t room = keep_budget(p);
    for (LayerPlan& l : p.layers) {
      if (!l.dual || room >= l.keep) continue;
      l.keep = room;
      l.solve_why += "; the memory leaves room to keep " + std::to_string(room) + " samples";
      if (room == 0) l.dual = false;
    }
    return;
  }
  for (LayerPlan& l : p.layers)
    if (l.dual && !p.on_cpu && !dual_cheaper(p, l))
      l.dual = false, l.solve_why = "auto on the GPU: " + count_text(p.samples, l.n) +
                                    ", but the sample-space solve costs more flops";
  bool any = false;
  for (const LayerPlan& l : p.layers) any |= l.dual;
  if (!any || (host_fits(p) && device_fits(p))) return;
  // The samples do not fit where C does (it may, with other terms): the primal then.
  const std::vector<LayerPlan> chosen = p.layers;
  for (LayerPlan& l : p.layers) l.dual = false;
  const bool primal_fits = host_fits(p) && device_fits(p);
  p.layers = chosen;
  if (primal_fits)
    for (LayerPlan& l : p.layers)
      if (l.dual)
        l.dual = false, l.solve_why += ", but the samples do not fit the memory and C does";
}

}  // namespace dalr::compress_job
