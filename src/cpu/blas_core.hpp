#pragma once
// OpenBLAS picks its kernels from the CPU's model number when it loads. Debian 12's
// OpenBLAS 0.3.21 does not know CPUs newer than itself (e.g. Intel family 6, model 207)
// and falls back to its "Prescott" SSE3 kernels: GEMM runs about 5x slower than the
// CPU's AVX-512 allows. OpenBLAS reads OPENBLAS_CORETYPE only when it loads, so the fix
// is to set it and start the program again.
#include <string>

namespace dalr::cpu {

// The kernel family OpenBLAS chose (openblas_get_corename), e.g. "SkylakeX", "Prescott".
std::string openblas_core();

// The kernel family this CPU can run: "SkylakeX" (AVX-512 F/BW/DQ/VL/CD), "Haswell"
// (AVX2 + FMA), or "" (neither).
std::string best_openblas_core();

// When OpenBLAS fell back to kernels older than AVX2 on a CPU with AVX2 or AVX-512 and
// OPENBLAS_CORETYPE is not set, sets it to best_openblas_core() and re-executes
// /proc/self/exe with argv (never returns then). Otherwise, or if exec fails, returns
// and the program runs as it is. Call first thing in main, before any thread starts.
// The user's own OPENBLAS_CORETYPE always wins.
void use_best_openblas_kernels(char** argv);

}  // namespace dalr::cpu
