#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "dalr/backend.hpp"
#include "dalr/communicator.hpp"
#include "dalr/compress.hpp"
#include "dalr/evaluate.hpp"
#include "dalr/sweep.hpp"

namespace dalr::cli {

const char* version();

// The backend for --device (auto: cuda when a device exists, else cpu with a notice) at
// --precision, parsed here once (auto: fp64 on the CPU, fp32 on the GPU).
std::unique_ptr<Backend> make_backend(const std::string& device, const std::string& precision,
                                      bool quiet);

// Registers the verbs and their options on `app`; run() executes the parsed one.
class Commands {
 public:
  Commands(CLI::App& app, Communicator& comm);  // comm: this run's processes
  int run();

 private:
  int run_compress();
  int run_inspect();
  int run_evaluate();
  int run_sweep();
  void add_compress(CLI::App& app);
  void add_compress_ranks(CLI::App* c);
  void add_evaluate(CLI::App& app);
  void add_sweep(CLI::App& app);
  void add_inspect(CLI::App& app);
  void add_image_cap(CLI::App* verb);

  Communicator& comm_;
  CLI::App* compress_ = nullptr;
  CLI::App* inspect_ = nullptr;
  CLI::App* evaluate_ = nullptr;
  CLI::App* sweep_ = nullptr;
  SweepOptions sopt_;
  std::string smethods_, sranks_, sdevice_ = "auto", sprecision_ = "auto", seigensolver_ = "auto";
  double slambda_ = 0;
  EvaluateOptions eopt_;
  std::string edevice_ = "auto", eprecision_ = "fp32";
  CompressOptions copt_;
  std::string device_ = "auto", precision_ = "auto", eigensolver_ = "auto";
  std::string lambda_str_;
  int64_t rank_ = 0;
  double keep_ = 0, budget_ = 0, max_drop_ = 0;
  bool quiet_ = false;
  int64_t max_image_pixels_ = 0;  // --max-image-pixels (compress, evaluate, sweep)
  std::string inspect_model_;
  bool inspect_json_ = false;
};

}  // namespace dalr::cli
