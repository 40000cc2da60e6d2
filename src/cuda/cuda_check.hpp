#pragma once
// One check family for the CUDA runtime, cuBLAS and cuSOLVER: each failing call throws
// dalr::Error naming the call, the status and where it was made. Destructors use the
// _NOTHROW form, which only logs. Kernel launches are followed by DALR_CUDA_CHECK_LAUNCH().
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdio>
#include <string>

#include "dalr/error.hpp"

namespace dalr::cuda::detail {

// cuSOLVER has no status-to-string function.
inline const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
#define DALR_CASE(x) \
  case x:            \
    return #x;
    DALR_CASE(CUSOLVER_STATUS_SUCCESS)
    DALR_CASE(CUSOLVER_STATUS_NOT_INITIALIZED)
    DALR_CASE(CUSOLVER_STATUS_ALLOC_FAILED)
    DALR_CASE(CUSOLVER_STATUS_INVALID_VALUE)
    DALR_CASE(CUSOLVER_STATUS_ARCH_MISMATCH)
    DALR_CASE(CUSOLVER_STATUS_MAPPING_ERROR)
    DALR_CASE(CUSOLVER_STATUS_EXECUTION_FAILED)
    DALR_CASE(CUSOLVER_STATUS_INTERNAL_ERROR)
    DALR_CASE(CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED)
    DALR_CASE(CUSOLVER_STATUS_NOT_SUPPORTED)
    DALR_CASE(CUSOLVER_STATUS_ZERO_PIVOT)
    DALR_CASE(CUSOLVER_STATUS_INVALID_LICENSE)
    DALR_CASE(CUSOLVER_STATUS_INVALID_WORKSPACE)
#undef DALR_CASE
    default:
      return "CUSOLVER_STATUS_<unknown>";
  }
}

inline std::string describe(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}
inline std::string describe(cublasStatus_t s) {
  return std::string(cublasGetStatusName(s)) + " (" + cublasGetStatusString(s) + ")";
}
inline std::string describe(cusolverStatus_t s) {
  return cusolver_status_name(s) + std::string(" (code ") + std::to_string(int(s)) + ")";
}

inline std::string message(const std::string& status, const char* call, const char* file,
                           int line) {
  return std::string(call) + " failed: " + status + " at " + file + ":" + std::to_string(line);
}

template <typename Status>
void check(Status s, Status ok, const char* call, const char* file, int line) {
  if (s != ok) throw Error(message(describe(s), call, file, line));
}

}  // namespace dalr::cuda::detail

#define DALR_CUDA_CHECK(call) \
  ::dalr::cuda::detail::check((call), cudaSuccess, #call, __FILE__, __LINE__)
#define DALR_CUBLAS_CHECK(call) \
  ::dalr::cuda::detail::check((call), CUBLAS_STATUS_SUCCESS, #call, __FILE__, __LINE__)
#define DALR_CUSOLVER_CHECK(call) \
  ::dalr::cuda::detail::check((call), CUSOLVER_STATUS_SUCCESS, #call, __FILE__, __LINE__)

// For destructors and other noexcept paths: report and carry on (no allocation here).
#define DALR_CUDA_CHECK_NOTHROW(call)                                                           \
  do {                                                                                          \
    cudaError_t dalr_e_ = (call);                                                               \
    if (dalr_e_ != cudaSuccess)                                                                 \
      std::fprintf(stderr, "dalr: %s failed: %s (%s) at %s:%d\n", #call,                        \
                   cudaGetErrorName(dalr_e_), cudaGetErrorString(dalr_e_), __FILE__, __LINE__); \
  } while (0)

// Catches bad launch configurations; faults inside the kernel surface at the next sync.
#define DALR_CUDA_CHECK_LAUNCH() DALR_CUDA_CHECK(cudaGetLastError())
