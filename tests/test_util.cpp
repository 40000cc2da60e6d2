#include "test_util.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace dalr::test {

uint64_t test_seed(uint64_t fallback) {
  const char* s = std::getenv("DALR_TEST_SEED");
  return s ? std::strtoull(s, nullptr, 10) : fallback;
}

TempDir::TempDir() {
  std::string base = std::filesystem::temp_directory_path().string() + "/dalr-test-XXXXXX";
  std::vector<char> buf(base.begin(), base.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run_cli(const std::string& args) {
#ifdef DALR_CLI_PATH
  std::string cmd = std::string("'") + DALR_CLI_PATH + "' " + args + " 2>&1";
#else
  std::string cmd = "dalr-gpu " + args + " 2>&1";
#endif
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool file_exists(const std::string& path) {
  return std::filesystem::exists(path);
}

void write_images_npy(const std::string& path, const std::vector<float>& v, int64_t n, int64_t c,
                      int64_t h, int64_t w) {
  if (static_cast<int64_t>(v.size()) != n * c * h * w)
    throw std::runtime_error("write_images_npy: size does not match the shape");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(n) +
                     ", " + std::to_string(c) + ", " + std::to_string(h) + ", " +
                     std::to_string(w) + "), }";
  dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');  // format 1.0: 64-byte aligned
  dict += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(dict.size() & 0xff);
  bytes += static_cast<char>(dict.size() >> 8);
  bytes += dict;
  bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  write_file(path, bytes);
}

}  // namespace dalr::test
