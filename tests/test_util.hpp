#pragma once
// Shared helpers for the tests: seeded random data, temporary folders, CLI runs.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/matrix.hpp"

namespace dalr::test {

// Seed from DALR_TEST_SEED if set, else the given default; printed by the callers.
uint64_t test_seed(uint64_t fallback);

template <typename T>
Matrix<T> random_matrix(int64_t r, int64_t c, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  Matrix<T> m(r, c);
  for (auto& v : m.data) v = static_cast<T>(nd(rng));
  return m;
}

// A fresh empty folder under the build tree's temp area, removed at exit of the test.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs the dalr-gpu binary built alongside the tests with the given argument string.
CommandResult run_cli(const std::string& args);

// The message of the dalr::Error that f() throws, or "<no throw>".
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no throw>";
}

// sqrt(sum (a - b)^2 / sum b^2), the relative Frobenius distance of a from b; infinity
// when the sizes differ.
double rel_diff(const std::vector<double>& a, const std::vector<double>& b);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);
bool file_exists(const std::string& path);
// A float32 .npy of shape (n, c, h, w), C order: images for --data FILE.npy.
void write_images_npy(const std::string& path, const std::vector<float>& v, int64_t n, int64_t c,
                      int64_t h, int64_t w);

}  // namespace dalr::test
