#include "cpu/blas_core.hpp"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace dalr::cpu {

namespace {

// 2: AVX2 + FMA kernels or better; 0: older or unknown.
int kernel_level(const std::string& core) {
  for (const char* c : {"SkylakeX", "Cooperlake", "SapphireRapids", "Haswell", "Zen"})
    if (core == c) return 2;
  return 0;
}

}  // namespace

std::string openblas_core() {
  const char* c = openblas_get_corename();
  return c ? c : "";
}

std::string best_openblas_core() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // libgcc checks that the OS saves the AVX/AVX-512 state (XGETBV) as well.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

void use_best_openblas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice, or our second start
  const std::string best = best_openblas_core();
  if (best.empty() || kernel_level(openblas_core()) >= 2) return;
  setenv("OPENBLAS_CORETYPE", best.c_str(), 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc?): go on with the kernels OpenBLAS chose.
}

}  // namespace dalr::cpu
