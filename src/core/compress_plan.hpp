#pragma once
// The compress job (dalr/compress.hpp) as a plan and stages. make_plan checks every
// option once, in one place, before any data is read (the model's header is read, its
// tensors are not). The stages then run over one LayerJob<T> per --layer:
//   load_layers -> collect_statistics -> choose_ranks -> solve_layer -> measure_error
//   -> write_model -> make_report -> commit_all (the model and the report together)
// (compress_plan.cpp, compress_stats.cpp, compress_stages.cpp, compress_write.cpp,
// compress_report.cpp; --max-drop's search in joint_search.cpp). A sequential job (conv
// layers, compress_sequential.cpp) runs collect_statistics to measure_error once per
// pass, each pass through the network with the layers solved so far replaced.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/job_common.hpp"  // Clock, seconds_since
#include "core/memory_check.hpp"
#include "core/stage_progress.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/compress.hpp"
#include "dalr/conv_geometry.hpp"
#include "dalr/precision.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "io/atomic_file.hpp"

namespace dalr::compress_job {

using json = nlohmann::json;

std::string fmt(double v, int prec = 4);
// What to do about an overflow at `precision`: fp64, unless it is already, and scaling.
std::string overflow_advice(Precision precision);
// The largest |activation| the statistics saw, for the messages about overflow.
template <typename T>
double largest_activation(const LayerStats<T>& st) {
  double a = 0;
  for (double v : st.max_x()) a = std::max(a, std::fabs(v));
  return a;
}

// How the ranks are chosen: exactly one of --rank, --keep, --budget, --max-drop.
enum class RankMode { Fixed, Keep, Budget, Joint };

struct LayerPlan {
  std::string name;
  int64_t m = 0, n = 0;  // NAME.weight is m x n
  // Fixed / Keep: the rank (pruning: kept units) before --round-rank, known from the
  // shape; Budget / Joint: 0, chosen by choose_ranks from the statistics.
  int64_t rank = 0;
  double file_bytes = 0;  // NAME.weight and NAME.bias in the model file
  // --solve: the samples are kept (X, n x p) and solved in sample space (solve_dual).
  // Streaming keeps at most `keep` of them: the batch that passes it forms C from them
  // and the pass goes on as the primal's (SampleKeeper, sample_keeper.hpp).
  bool dual = false;
  int64_t keep = 0;
  std::string solve_why;  // why this path (the report's solve_reason)
  // A conv layer: NAME.weight is c_out x c_in x kh x kw (`weight_shape`), seen as
  // m = c_out by n = c_in kh kw; its samples are the patches of its input feature maps
  // (dalr/conv_geometry.hpp), whose geometry at the arch's input size is `geometry`.
  bool conv = false;
  std::vector<int64_t> weight_shape;
  ConvGeometry geometry;
  size_t arch_index = 0;  // its place in the arch (with one; --acts stream and conv layers)
};

struct Plan {
  CompressOptions o;
  Precision precision = Precision::Fp64;
  Method method = Method::Dalr;
  RankMode mode = RankMode::Fixed;
  bool stream = false;  // --acts stream: the network runs on --data
  std::vector<LayerPlan> layers;
  std::unique_ptr<SafetensorsFile> model;  // header read; the stages read its tensors
  bool have_arch = false;                  // the model's dalr.arch, or --arch
  Arch arch;
  const TensorInfo* next = nullptr;  // --next-layer's weight (inside `model`)
  bool on_cpu = true;                // the backend is the CPU's
  // p: the activation file's rows, or with --acts stream the images (counted only when
  // the dual may run; 0 otherwise).
  int64_t samples = 0;
  int64_t acts_elem = 0;  // bytes of an activation file's values (0: none)
  MemoryBudget budget;    // what the machine offers (memory_check.hpp)
  MemoryEstimate memory;  // the job's estimate, made by check_memory
  // Conv layers among several, without --independent: a pass per conv layer in network
  // order, then one for the fc layers (compress_sequential.cpp).
  bool sequential = false;
  // Sequential with --sequential asymmetric and dalr or dalr-exact: a pass through a
  // compressed upstream also runs the original network and fits asymmetrically.
  bool asymmetric = false;
};

// What a statistics pass runs: the plan's model and arch, or (a sequential pass) the
// model with the layers solved so far replaced by their factors.
struct Network {
  const SafetensorsFile* model = nullptr;
  const Arch* arch = nullptr;
};

// Validates `o` for a job at `precision` and resolves what can be known before the data:
// the method, the rank mode, the layers' shapes, the architecture, fixed ranks. Throws
// dalr::Error with a message a user can act on; writes nothing.
// on_cpu: the job's backend is the CPU one; budget: the memory it may use (--solve auto
// chooses by it; a job that cannot fit is refused, memory_check.hpp).
Plan make_plan(const CompressOptions& o, Precision precision, bool on_cpu = true,
               const MemoryBudget& budget = {});

// --solve (compress_solve.cpp): each layer's path (LayerPlan::dual, keep, solve_why) from
// p, n, the memory model and, on a GPU, the flop counts; throws where --solve dual cannot
// run. dual_refusal: why the sample-space solve cannot run for this job (null: it can).
void plan_solve(Plan& p);
const char* dual_refusal(const Plan& p);

// The rank (pruning: kept units) of a layer from its requested one, rounded up to a
// multiple of --round-rank (never past the maximum); the requested one without it.
int64_t rounded_rank(const Plan& p, int64_t m, int64_t n, int64_t requested);

template <typename T>
struct Layer {
  Matrix<T> w;
  std::vector<T> b;
  bool had_bias = false;
};

// One --layer through the stages.
template <typename T>
struct LayerJob {
  std::string name;
  bool conv = false;                  // LayerPlan's
  std::vector<int64_t> weight_shape;  // conv: c_out x c_in x kh x kw
  ConvGeometry geometry;              // conv: at the input size the statistics were taken at
  std::vector<std::string> upstream;  // sequential: the compressed layers its pass ran through
  Layer<T> l;
  LayerStats<T> st;    // all samples (for --lambda auto: first the fit part)
  LayerStats<T> held;  // --lambda auto: every 10th sample, held out to choose lambda
  // An asymmetric pass (Plan::asymmetric, through a compressed upstream): st is C^ (the
  // inputs in the compressed network), orig C_o (in the original one), cross K = X X^^T.
  LayerStats<T> orig;
  Matrix<T> cross;
  bool asymmetric = false;
  std::shared_ptr<const Matrix<T>> x;  // the dual's samples (n x p), st made from them
  bool dual = false;                   // LayerPlan's: its samples are kept (the dual's)
  int64_t keep = 0;                    // LayerPlan's: streaming keeps at most this many
  std::string solve_why;               // LayerPlan's, and the switch if one came
  Factors<T> fac;
  int64_t rank = 0;
  // --budget with sequential passes: the rank allocated before them (budget_ranks_first),
  // which the passes' choose_ranks takes; 0 otherwise.
  int64_t allocated = 0;
  double lambda = 0, lambda_rel = 0;
  json rep;  // this layer's part of the report
};

// What the stages add to the report besides the layers' parts.
struct JobOutput {
  json rep, timing;
  std::vector<std::string> warnings;
  double solve_s = 0, error_s = 0;
  // The model and the report, written but not yet in place: committed together by the
  // job once both are complete, so a report that fails leaves --out as it was.
  std::vector<std::unique_ptr<AtomicFile>> staged;
};

template <typename T>
std::vector<LayerJob<T>> load_layers(const Plan& p);
// The layers' statistics (from --stats, --acts FILE or --acts stream through `net`, null:
// the plan's model); --save-stats.
template <typename T>
void collect_statistics(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                        JobOutput& out, const Network* net = nullptr);
// An asymmetric pass (Plan::asymmetric): one stream of --data through the plan's network
// and `net` (the compressed upstream) together, each job's C^, C_o and K from the same
// images; then as collect_statistics (checks, --save-stats of C^).
template <typename T>
void collect_asymmetric_statistics(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                                   JobOutput& out, const Network& net);
// --budget in a sequential job: the ranks allocated from one pass of the original network
// (every layer's statistics, then their spectra) into each job's `allocated`, before the
// sequential passes fit the factors at those ranks; the statistics are then dropped.
template <typename T>
void budget_ranks_first(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                        JobOutput& out, StageRates& rates);
// The solves and errors below print progress lines (stage_progress.hpp) unless --quiet,
// their estimates from `rates`.
template <typename T>
void choose_ranks(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend, JobOutput& out,
                  StageRates& rates);
template <typename T>
void solve_layer(const Plan& p, LayerJob<T>& j, Backend& backend, StageRates& rates);
template <typename T>
void measure_error(const Plan& p, LayerJob<T>& j, Backend& backend, StageRates& rates);
// solve_layer and measure_error for every job, their times added to out.solve_s, error_s.
template <typename T>
void solve_layers(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend, JobOutput& out,
                  StageRates& rates);
// The sequential job (Plan::sequential): statistics, ranks, solves and errors of every
// layer, pass by pass (compress_sequential.cpp).
template <typename T>
void compress_sequentially(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                           JobOutput& out, StageRates& rates);
// Throws naming the tensor when a factor of the layer is NaN, Inf or beyond float32's
// range (the model stores float32): an overflow, with what to do about it.
template <typename T>
void check_factors(const Plan& p, const LayerJob<T>& job);
template <typename T>
void write_model(const Plan& p, const std::vector<LayerJob<T>>& jobs, JobOutput& out);
// The model with `jobs`' layers replaced by their factors, as write_model writes it: its
// tensors in file order (borrowing the unchanged ones from the plan's model; `rep` gets
// --next-layer's entry) and its architecture (with one; pruning without --next-layer
// adds a warning).
template <typename T>
std::vector<TensorOut> factored_tensors(const Plan& p, const std::vector<const LayerJob<T>*>& jobs,
                                        json& rep);
template <typename T>
Arch factored_arch(const Plan& p, const std::vector<const LayerJob<T>*>& jobs,
                   std::vector<std::string>& warnings);
template <typename T>
CompressResult make_report(const Plan& p, const std::vector<LayerJob<T>>& jobs,
                           const Backend& backend, JobOutput& out);

// compress --max-drop (joint_search.cpp): the greedy joint search's ranks.
template <typename T>
std::vector<int64_t> joint_ranks(const CompressOptions& o, const SafetensorsFile& model,
                                 const Arch& arch, const std::vector<LayerJob<T>>& jobs,
                                 Method method, Backend& backend, json& rep,
                                 std::vector<std::string>& warnings);

}  // namespace dalr::compress_job
