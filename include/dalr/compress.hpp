#pragma once
// The compress job behind `dalr-gpu compress`: model + activations in, a compressed
// model (and optionally statistics and a JSON report) out.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dalr/eigensolver.hpp"

namespace dalr {

class Backend;
class Communicator;

// Default relative ridge: lambda = kDefaultLambdaRel * trace(C) / n (see README).
inline constexpr double kDefaultLambdaRel = 1e-3;

struct CompressOptions {
  std::string model;      // safetensors (*.bin or *.safetensors)
  std::string layer;      // NAME of NAME.weight (m x n, or conv c_out x c_in x kh x kw) / NAME.bias
  std::string acts;       // .npy (p, n) layer inputs, or "stream" (run the network on `data`);
                          // may be empty when `stats_in` is given
  std::string acts_test;  // optional held-out activations for the error report
  std::string stats_in;   // optional statistics file to start from (resume)
  std::string save_stats;  // optional: write the accumulated statistics here
  std::string out;         // compressed model
  std::string report;      // optional JSON report
  std::string method = "dalr";
  std::string next_layer;  // pruning: shrink NEXT.weight's input columns

  // How the ranks are chosen: exactly one of these four.
  std::optional<int64_t> rank;   // k, at least 1 (pruning: the units of k's parameter budget)
  std::optional<double> keep;    // fraction of the layer's weights to keep, in (0, 1]
  std::optional<double> budget;  // several layers: ranks allocated from spectra (solver.hpp)
  // What --budget counts: "params" (the layers' weights) or "flops" (their multiply-adds
  // per image: a conv layer's weights times its output positions).
  std::string budget_by = "params";
  // Joint search (several layers): shrink the ranks greedily while the top-1 accuracy on
  // `val` stays within `max_drop` percentage points of the uncompressed one.
  std::optional<double> max_drop;
  std::string val;               // labelled image folder the accuracy is measured on
  int64_t val_limit = 0;         // use at most this many validation images (0: all)
  std::string test;              // with max_drop: report the result's accuracy on this folder
  double shrink = 0.8;           // a step multiplies one layer's rank by this (at least 1 less)
  int64_t round_rank = 0;        // round the rank up to a multiple of this (0, 1: no rounding)
  std::optional<double> lambda;  // absolute ridge
  double lambda_rel = kDefaultLambdaRel;
  bool lambda_auto = false;  // choose lambda_rel on every 10th sample, held out
  int64_t batch = 512;       // samples per streamed chunk (images per forward batch when streaming)
  // --acts stream: the network runs on these images up to each layer's input.
  std::string data;        // image folder (class subfolders) or .npy (N, C, H, W)
  std::string arch;        // preset for a state dict without dalr.arch (vgg11 ... vgg19_bn)
  int64_t input_size = 0;  // the preset's crop (0: 224)
  int workers = 2;         // image decoding threads
  int64_t limit = 0;       // use at most this many images (0: all)
  bool shuffle = false;
  uint64_t seed = 0;
  // Conv layers among several (--acts stream) are compressed one after another: each
  // layer's statistics come from a pass of the network whose earlier given layers are
  // already replaced by their factors (the fc layers share one last pass, through every
  // compressed conv layer). true: one pass of the original network for all layers.
  bool independent = false;
  // How a sequential pass through a compressed upstream fits dalr and dalr-exact:
  // "asymmetric" (the default; Zhang et al. 2015, dalr/asymmetric.hpp): the compressed
  // layer on its inputs in the compressed network, to the ORIGINAL layer's outputs;
  // "symmetric": the ordinary solve on the inputs in the compressed network alone.
  std::string sequential = "asymmetric";
  bool quiet = false;  // no progress lines
  // Skip the training reconstruction error (2 m n^2 flops from the statistics: minutes
  // at VGG19 fc6 on a CPU); the report's error_train is then null. --acts-test still runs.
  bool no_error = false;
  // dalr/dalr-exact's eigensolver (solver.hpp). --budget and --max-drop's comparison rank
  // by whole spectra and use the full one for them whatever this says.
  Eigensolver eigensolver = Eigensolver::Auto;
  // dalr/dalr-exact: "primal" (from C = X X^T, n x n), "dual" (from the samples X kept in
  // memory: p x p and m x m problems; streaming keeps them while they are fewer than n,
  // then forms C) or "auto" (dual when p < n, the method is dalr or dalr-exact and it
  // fits the memory; on a GPU also when it costs fewer flops).
  std::string solve = "auto";
  // The most host memory the process may hold ("8G", "500M": memory_check.hpp's
  // parse_memory_size); empty: what the machine has available (MemAvailable, the cgroup's
  // limit); "none": no check. A job whose memory model passes it is refused before any
  // data is read.
  std::string memory_limit;
  // Several processes (dalr/communicator.hpp; null: one). Each rank reads its contiguous
  // share of --acts FILE's rows or of --acts stream's image list; rank 0 merges --stats,
  // solves, writes and reports.
  Communicator* comm = nullptr;
};

// On the ranks other than 0 of several processes, which only accumulate: no report,
// only their own warnings (images they skipped).
struct CompressResult {
  std::string report_json;            // the whole report
  std::string summary;                // a few human-readable lines
  std::vector<std::string> warnings;  // also inside the report
};

// Runs the job on `backend` (make_cpu_backend() or dalr::cuda::make_backend()), at the
// backend's precision (Backend::precision).
// Throws dalr::Error with a message a user can act on. Never leaves a partial output.
CompressResult compress(const CompressOptions& opt, Backend& backend);

}  // namespace dalr
