#pragma once
// Memory as named terms: the bytes a step allocates, one entry per buffer (or group of
// buffers), so that a check can say what needs the memory and not only how much. The GPU
// backend's steps are here because two parties read them: the steps themselves, which
// check the device's free memory before they allocate (src/cuda/gpu_stats.cpp,
// gpu_solver.cpp, gpu_recon.cpp), and the compress job's memory model
// (src/core/memory_model.cpp), which adds them up before any data is read.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dalr/solver.hpp"

namespace dalr {

struct MemoryTerm {
  std::string name;  // what it holds, with its shape: "C (n x n)"
  double bytes = 0;  // counted in double: exact for any real size, never wraps
};

double total_bytes(const std::vector<MemoryTerm>& terms);
// `bytes` as a size_t, saturating at its maximum.
size_t saturated_size(double bytes);

// cuBLAS/cuSOLVER's own scratch and cudaMalloc's rounding: a reserve each GPU step adds.
inline constexpr double kGpuLibraryReserve = double(size_t(64) << 20);

// GpuStats (src/cuda/gpu_stats.cpp): C, the two staging blocks, W, b, Y, the double
// sums and maxima, and the reserve. elem: bytes of the job's scalar (4 or 8).
std::vector<MemoryTerm> gpu_stats_terms(int64_t n, int64_t m, int64_t batch, size_t elem);
// cuda::solve (gpu_solver.cpp) of a method at rank k; empty for pruning (a host sort).
// cuSOLVER's workspaces are known only from a query on a live handle: estimated by
// LAPACK's documented minimum for the same routine, generously.
std::vector<MemoryTerm> gpu_solve_terms(Method method, int64_t m, int64_t n, int64_t k,
                                        size_t elem);
// cuda::solve_dual over p samples.
std::vector<MemoryTerm> gpu_solve_dual_terms(int64_t m, int64_t n, int64_t p, int64_t k,
                                             size_t elem);
// cuda::reconstruction_error from the statistics; c_on_device: C is already there (the GPU
// statistics' copy), so it is not uploaded again.
std::vector<MemoryTerm> gpu_error_terms(int64_t m, int64_t n, int64_t k, bool c_on_device,
                                        size_t elem);

}  // namespace dalr
