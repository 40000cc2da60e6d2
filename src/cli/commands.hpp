#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "dalr/backend.hpp"
#include "dalr/compress.hpp"
#include "dalr/evaluate.hpp"
#include "dalr/sweep.hpp"

namespace dalr::cli {

const char* version();

// The backend for --device (auto: cuda when a device exists, else cpu with a notice).
std::unique_ptr<Backend> make_backend(const std::string& device, const std::string& precision,
                                      bool quiet);

// Registers the verbs and their options on `app`; run() executes the parsed one.
inline CompressOptions default_options() {
  CompressOptions o;
  o.precision = "auto";  // resolved once the device is known
  return o;
}

class Commands {
 public:
  explicit Commands(CLI::App& app);
  int run();

 private:
  int run_compress();
  int run_inspect();
  int run_evaluate();
  int run_sweep();
  void add_sweep(CLI::App& app);

  CLI::App* compress_ = nullptr;
  CLI::App* inspect_ = nullptr;
  CLI::App* evaluate_ = nullptr;
  CLI::App* sweep_ = nullptr;
  SweepOptions sopt_;
  std::string smethods_, sranks_, sdevice_ = "auto";
  double slambda_ = 0;
  EvaluateOptions eopt_;
  std::string edevice_ = "auto";
  CompressOptions copt_ = default_options();
  std::string device_ = "auto";
  std::string lambda_str_;
  double max_drop_ = 0;
  bool quiet_ = false;
  std::string inspect_model_;
  bool inspect_json_ = false;
};

}  // namespace dalr::cli
