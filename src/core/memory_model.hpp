#pragma once
// The compress job's memory model: the bytes each stage holds at its peak, on the host and
// on the device, as named terms ("C (n x n)", "X, the kept samples (n x p)") read off the
// code's allocations, so that a job that cannot fit is refused before any work with what
// needs the memory (core/memory_check.hpp), and the report can say what the job needed.
//
// Stages, in the job's order; each one's terms are what is resident at its worst moment:
//   load        the layers' weights (the model file's pages and W as read, then copied)
//   statistics  C per layer (or X, the kept samples, for the dual), the chunk being read,
//               the forward pass's weights and activations when streaming
//   solve       what stays (C or X, W, every layer's factors) plus one layer's solve at its
//               largest moment (W C, the factor of C + lambda I, G and the eigensolver's
//               workspace; or Z, K and its factor for the dual)
//   error       the training error (from the file in chunks, from C, or from the kept X)
//   write       the factors converted to float32, every tensor of the model file read
// The host peak adds `baseline`: what the process holds before the job (the program and its
// libraries, measured when the plan is made). Not modelled: the image decoding ring
// (a few images per worker), cuDNN's workspace (it takes at most half the free device
// memory it finds), the CUDA driver's own host memory, and allocator slack.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/memory_terms.hpp"
#include "dalr/eigensolver.hpp"
#include "dalr/solver.hpp"

namespace dalr {

// What the model needs to know of a compress job (compress_job::memory_shape fills it
// from the plan).
struct MemoryShape {
  size_t elem = 8;    // bytes of the job's scalar: 8 for fp64, else 4
  bool cuda = false;  // statistics, solve and error from statistics run on a GPU
  Method method = Method::Dalr;
  Eigensolver eigensolver = Eigensolver::Auto;
  bool lambda_zero = false;  // --lambda 0: (pseudo-)inverse through an eigendecomposition
  bool lambda_auto = false;
  bool no_error = false;
  bool save_stats = false;
  enum class Source { File, Stream, Stats };
  Source source = Source::File;
  bool stats_in = false;     // --stats too (read, then merged)
  int64_t batch = 512;       // samples per chunk; images per forward batch when streaming
  int64_t samples = 0;       // p: the activation file's rows or the images; 0 when unknown
  double convert_bytes = 0;  // the activation file's conversion buffer (0: it holds T)
  int64_t test_samples = 0;  // --acts-test rows (0: none)
  double model_bytes = 0;    // every tensor of the model file
  // --acts stream: the forward pass.
  double net_values = 0;       // values of the network's tensors (held in T)
  int64_t image_values = 0;    // one input image, C H W
  int64_t max_activation = 0;  // the largest activation of one image up to the last tap
  int64_t max_im2col = 0;      // the largest im2col block of one image (0: none)
  // Conv layers compressed one pass at a time: each pass runs a model file holding the
  // factors so far (mapped).
  bool sequential = false;
  // Sequential asymmetric passes (Plan::asymmetric): C_o and K beside C, the cross
  // accumulator's patch tiles and the original network's forward pass too.
  bool asymmetric = false;
  struct Layer {
    std::string name;
    int64_t m = 0, n = 0;
    int64_t k = 0;          // the rank (kept units), or a bound when chosen later
    double file_bytes = 0;  // its weight and bias in the model file
    bool dual = false;      // its samples are kept as X (n x kept)
    int64_t kept = 0;       // samples kept (dual)
    bool switches = false;  // streaming: C is formed from the kept samples during the pass
    // A conv layer: output positions per image (its samples are patches, n = c_in kh kw
    // values each, cut into tiles of `tile` of them); 0 for an fc layer.
    int64_t positions = 0;
    int64_t tile = 0;
  };
  std::vector<Layer> layers;
};

// Whether a compress job's statistics keep the outputs' sums and maxima (a GEMM W X per
// batch, as costly as C at m = n): the pruning methods read them, and a file that
// --save-stats writes or --stats brings holds them (the merge checks m), so that such a
// file serves every method. The accumulators (compress_stats.cpp) and this model agree.
inline bool keeps_output_statistics(Method method, bool save_stats, bool stats_in) {
  return is_pruning(method) || save_stats || stats_in;
}

struct StageMemory {
  std::string name;
  std::vector<MemoryTerm> host, device;
  double host_bytes() const { return total_bytes(host); }
  double device_bytes() const { return total_bytes(device); }
};

struct MemoryEstimate {
  double baseline = 0;  // resident before the job: the program and its libraries
  std::vector<StageMemory> stages;
  double host_peak() const;    // baseline + the largest stage
  double device_peak() const;  // the largest stage (0 on the CPU)
  const StageMemory& host_peak_stage() const;
  const StageMemory& device_peak_stage() const;
};

MemoryEstimate estimate_memory(const MemoryShape& shape, double baseline = 0);

// The report's "memory": peaks, the stage each is reached in, and every stage's terms.
nlohmann::json memory_json(const MemoryEstimate& e);

// "1.25 GB" (decimal gigabytes, 3 significant digits; MB below 0.1 GB).
std::string gigabytes(double bytes);

}  // namespace dalr
