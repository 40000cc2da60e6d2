#pragma once
// Candidates scored on cached features: a labelled split's features at a layer's input,
// kept in host memory (one streamed pass); the candidate factors as substitutions, so
// that the forward pass (Forward::run_from) runs the network with them as it runs the
// written model; top-1/top-5/agreement of the result. Shared by `sweep` and
// `compress --max-drop` (joint search).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/job_common.hpp"
#include "core/stream.hpp"
#include "dalr/arch.hpp"
#include "dalr/forward.hpp"
#include "dalr/matrix.hpp"
#include "dalr/precision.hpp"
#include "dalr/solver.hpp"

namespace dalr {

class Backend;
class SafetensorsFile;

// A split's features at the layer's input, in the batches the source gave (so the head
// runs on the same chunks as `evaluate` does).
struct Features {
  int64_t n = 0, count = 0;
  std::vector<float> x;  // n x count, column-major
  std::vector<int64_t> labels, chunks;
};

// The CPU backend the candidates are scored on (on either device): activations stored
// as `precision` stores them (16-bit rounding emulated), float otherwise, so a score is
// `evaluate --device cpu` of the written model at that precision, bit for bit.
std::unique_ptr<Backend> scoring_backend(Precision precision);

// One pass over `d.data` up to `layer`'s input. `option` names the split's option in
// messages (e.g. "--test"). Throws when nothing is readable or nothing is labelled.
Features cache_features(const DataOptions& d, const std::string& layer, const std::string& option,
                        const Arch& arch, const SafetensorsFile& model, Backend& backend,
                        std::vector<std::string>& warnings);

// Factors of linear layer `layer` as the compressed model file holds them, for
// Forward::run_from: a factorisation as NAME.0 (B, no bias) and NAME.1 (A with the
// bias); a pruning as the kept rows of NAME and the kept columns of the next linear
// layer (`next`), as compress --next-layer writes them.
template <typename T>
Substitution<float> factored_substitution(const std::string& layer, const Factors<T>& f);
// The linear layer after a pruned one: its weight (rows x m row-major, as the file holds
// it) and bias.
struct NextLayer {
  std::string name;
  int64_t rows = 0;
  std::vector<float> w, b;
};
template <typename T>
std::vector<Substitution<float>> pruned_substitutions(const std::string& layer, const Factors<T>& f,
                                                      int64_t m, const NextLayer& next);

struct Scores {
  double top1 = 0, top5 = 0, agreement = 0;
};

// Scores of `logits_of(x, cols)` over the cached features, chunk by chunk; with
// `base_pred`, the agreement with it; with `pred`, the top-1 predictions appended.
template <typename Logits>
Scores score(const Features& f, const std::vector<int64_t>& base_pred, std::vector<int64_t>* pred,
             const Logits& logits_of) {
  int64_t hit1 = 0, hit5 = 0, agree = 0, labelled = 0, at = 0;
  for (int64_t cols : f.chunks) {
    const Matrix<float> logits = logits_of(f.x.data() + at * f.n, cols);
    for (int64_t j = 0; j < cols; ++j, ++at) {
      const std::vector<int64_t> best = top_k(logits, j, 5);
      const int64_t label = f.labels[static_cast<size_t>(at)];
      if (label >= 0) {
        ++labelled;
        hit1 += best[0] == label;
        hit5 += std::find(best.begin(), best.end(), label) != best.end();
      }
      if (pred) pred->push_back(best[0]);
      if (!base_pred.empty()) agree += base_pred[static_cast<size_t>(at)] == best[0];
    }
  }
  Scores s;
  s.top1 = labelled ? double(hit1) / labelled : 0;
  s.top5 = labelled ? double(hit5) / labelled : 0;
  s.agreement = double(agree) / double(f.count);
  return s;
}

}  // namespace dalr
