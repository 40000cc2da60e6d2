#pragma once
// Progress of the long single-call stages (a layer's solve, its training error): the
// statistics pass reports per batch (Progress, stream.hpp), but a solve is one backend
// call of up to minutes. So, on stderr like Progress and silenced by --quiet: a line when
// the stage starts, with what it computes and an estimate from its flop count; while it
// runs, the elapsed time every few seconds (rewritten in place on a terminal); and the
// time it took when it ends. A stage estimated under a second starts silently and says
// something only if it runs past the first tick (small jobs print what they printed).
// Not on a terminal:
//   solve fc6 (dalr, 4096 x 25088, rank 256): eigenvectors of 4096 x 4096 (top 256),
//     Cholesky of 25088 x 25088 (est. 50 s) ...                    [one line]
//   solve fc6 (...) (est. 50 s) ... 5.0 s so far                     [every 5 s]
//   solve fc6 (...) (est. 50 s) ... 48.2 s                           [at the end]
// On a terminal the start line, then "solve fc6: 12 s" rewritten every second.
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "dalr/backend.hpp"
#include "dalr/solver.hpp"

namespace dalr {

// Floating-point operations of a solve (weighted: an eigendecomposition counts what it
// costs, not its textbook flops), and what it computes, for the line.
// `host`: the CPU backend solves (its eigensolver choice includes the subspace iteration;
// the GPU's does not: StageRates::host()).
double solve_flops(const SolveOptions& opt, int64_t m, int64_t n, bool host = true);
std::string solve_description(const SolveOptions& opt, int64_t m, int64_t n, bool host = true);
// The same for the sample-space solve over p samples (solve_dual).
double solve_flops_dual(const SolveOptions& opt, int64_t m, int64_t n, int64_t p, bool host = true);
std::string solve_description_dual(const SolveOptions& opt, int64_t m, int64_t n, int64_t p,
                                   bool host = true);
// The training error: from the statistics (samples == 0: 2 (m + k) n^2) or a pass over
// `samples` activations.
double error_flops(int64_t m, int64_t n, int64_t k, int64_t samples);

// The rate behind the estimates: assumed from the backend (CPU or GPU, fp32 or fp64) until
// a stage of the job has run, then the last observed one.
class StageRates {
 public:
  explicit StageRates(const Backend& backend);
  double seconds(double flops) const { return flops / rate_; }
  void observe(double flops, double seconds);
  bool host() const { return host_; }  // the backend is the CPU's

 private:
  double rate_;
  bool host_ = true;
};

class StageProgress {
 public:
  // Prints the start line (nothing when quiet) and starts the ticker.
  StageProgress(std::string what, double flops, StageRates& rates, bool quiet);
  // Stops the ticker; without finish() (an exception) only ends a terminal's open line,
  // so that the error message starts on a line of its own.
  ~StageProgress();
  // Prints the time taken, teaches `rates` the observed rate; returns the seconds.
  double finish();

  StageProgress(const StageProgress&) = delete;
  StageProgress& operator=(const StageProgress&) = delete;

 private:
  void show();
  void tick();
  void stop();

  std::string what_, label_;  // "solve fc7 (...)", and "solve fc7"
  double flops_;
  StageRates& rates_;
  bool quiet_, tty_;
  // Written by the ticker while it runs (under mu_), read after it stops.
  bool shown_ = false;      // the start line was printed
  bool open_line_ = false;  // a terminal line without its newline yet
  double start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread ticker_;
};

}  // namespace dalr
