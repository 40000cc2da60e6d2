#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "dalr/compress.hpp"

namespace dalr::cli {

const char* version();

// Registers the verbs and their options on `app`; run() executes the parsed one.
class Commands {
 public:
  explicit Commands(CLI::App& app);
  int run();

 private:
  int run_compress();
  int run_inspect();

  CLI::App* compress_ = nullptr;
  CLI::App* inspect_ = nullptr;
  CompressOptions copt_;
  double lambda_ = 0;
  bool quiet_ = false;
  std::string inspect_model_;
  bool inspect_json_ = false;
};

}  // namespace dalr::cli
