#pragma once
// DALR_CUDNN_CHECK: the cuDNN member of the check family in cuda_check.hpp. A failing
// call throws dalr::Error naming the call, the status and where it was made; the
// _NOTHROW form (destructors) only logs.
#include <cudnn.h>

#include <cstdio>
#include <string>

#include "cuda/cuda_check.hpp"

namespace dalr::cuda::detail {

inline std::string describe_cudnn(cudnnStatus_t s) {
  return std::string(cudnnGetErrorString(s)) + " (code " + std::to_string(int(s)) + ")";
}

// Not an overload of detail::check: cudnnStatus_t lives in the global namespace, so the
// template there would not find a describe() declared after it.
inline void check_cudnn(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) throw Error(message(describe_cudnn(s), call, file, line));
}

}  // namespace dalr::cuda::detail

#define DALR_CUDNN_CHECK(call) ::dalr::cuda::detail::check_cudnn((call), #call, __FILE__, __LINE__)

#define DALR_CUDNN_CHECK_NOTHROW(call)                                                            \
  do {                                                                                            \
    cudnnStatus_t dalr_s_ = (call);                                                               \
    if (dalr_s_ != CUDNN_STATUS_SUCCESS)                                                          \
      std::fprintf(stderr, "dalr: %s failed: %s at %s:%d\n", #call, cudnnGetErrorString(dalr_s_), \
                   __FILE__, __LINE__);                                                           \
  } while (0)
