#pragma once
// `dalr-gpu sweep`: every (method, rank) point of the paper's tables from one streamed
// pass over the training split (the layer's statistics) and one over the test split
// (the layer's input features, cached in host memory with the labels). Each point then
// costs one solve and the network's head on the cached features.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dalr/compress.hpp"

namespace dalr {

class Backend;

struct SweepOptions {
  std::string model, arch, layer;
  int64_t input_size = 0;            // --arch preset's crop (0: 224)
  std::vector<std::string> methods;  // dalr, dalr-exact, svd, svd-bc, prune-mean, prune-max
  std::vector<int64_t> ranks;        // k; pruning keeps the units of the same budget
  std::string data;                  // training split (image folder or .npy), or...
  std::string stats_in;              // ...statistics saved by compress --save-stats
  std::string test;                  // test split (image folder with labels)
  std::string out;                   // PREFIX: PREFIX.csv/.md/.json/.svg, PREFIX-spectrum.svg
  std::optional<double> lambda;
  double lambda_rel = kDefaultLambdaRel;
  int64_t batch = 64;
  int workers = 2;
  int64_t limit = 0, test_limit = 0;  // 0: all
  bool shuffle = false;
  uint64_t seed = 0;
  bool quiet = false;
  // dalr/dalr-exact's eigensolver (solver.hpp); with auto, each method's first point, whose
  // spectrum PREFIX-spectrum.svg draws, uses the full one.
  Eigensolver eigensolver = Eigensolver::Auto;
};

struct SweepPoint {
  std::string method;
  int64_t rank = 0;  // the column's k
  int64_t kept = 0;  // k, or the kept units for pruning
  bool skipped = false;
  std::string note;          // why it was skipped
  double kept_fraction = 0;  // of the layer's weights, as compress reports it
  double lambda = 0;
  double error_rel = 0, error_abs = 0;  // train reconstruction error, from the statistics
  double energy_kept = 0;
  double top1 = 0, top5 = 0, agreement = 0;  // on the test split
  double solve_s = 0, head_s = 0;
};

struct SweepResult {
  int64_t m = 0, n = 0, train_samples = 0, test_images = 0;
  // A conv layer (m = c_out, n = c_in kh kw): its output positions per image at the arch's
  // input size, so its multiply-adds are positions m n (kept: positions k (m + n), the
  // same share as its weights); 1 for an fc layer.
  int64_t positions = 1;
  bool conv = false;
  double base_top1 = 0, base_top5 = 0;
  std::vector<SweepPoint> points;                                    // methods x ranks, row by row
  std::vector<std::pair<std::string, std::vector<double>>> spectra;  // method, descending
  std::vector<std::string> warnings;
  std::string device, precision;
  double stats_s = 0, features_s = 0, total_s = 0;
};

// Runs the sweep (throws dalr::Error with a message a user can act on) and, with
// `out`, writes the files atomically.
SweepResult sweep(const SweepOptions& opt, Backend& backend);

// The stdout table: rows methods, columns ranks with the kept percentage, cells top-1.
std::string sweep_table(const SweepResult& r);

}  // namespace dalr
