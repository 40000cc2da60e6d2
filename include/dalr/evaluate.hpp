#pragma once
// `dalr-gpu evaluate`: top-1 / top-5 accuracy of a model (compressed or not) on an image
// folder, and with `compare` the agreement of its predictions with another model's.
#include <cstdint>
#include <string>
#include <vector>

namespace dalr {

struct EvaluateOptions {
  std::string model, arch, compare, data, report;
  int64_t input_size = 0;  // --arch preset's crop (0: 224)
  // A CSV of one row per image (evaluate's --predictions; write_predictions's columns).
  std::string predictions;
  int workers = 2;
  int64_t limit = 0, batch = 64;
  bool shuffle = false, quiet = false;
  uint64_t seed = 0;
};

struct EvaluateResult {
  int64_t images = 0, labelled = 0;
  double top1 = 0, top5 = 0;  // over the labelled images
  double agreement = -1;      // top-1 agreement with `compare`; -1 without it
  std::string summary, report_json;
  std::vector<std::string> warnings;  // in the summary and the report
};

class Backend;

// Runs the forward passes on `backend` (CPU or CUDA).
EvaluateResult evaluate(const EvaluateOptions& o, Backend& backend);

}  // namespace dalr
