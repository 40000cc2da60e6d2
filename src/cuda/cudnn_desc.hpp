#pragma once
// cuDNN's legacy descriptors for the GPU forward pass (cudnn_forward.cpp): owners that
// destroy without throwing, the int-size check their setters need, status categories,
// and the precision policy's math types.
#include <cudnn.h>

#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/cudnn_check.hpp"
#include "dalr/arch.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"

namespace dalr::cuda::fwd {

template <typename T>
constexpr cudnnDataType_t cudnn_type() {
  return std::is_same<T, double>::value ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
}

// Owner of a cuDNN handle or descriptor: created on construction, destroyed without
// throwing. S* is the opaque pointer type the C API hands out.
template <typename S, cudnnStatus_t (*Create)(S**), cudnnStatus_t (*Destroy)(S*)>
class CudnnObject {
 public:
  CudnnObject() { DALR_CUDNN_CHECK(Create(&p_)); }
  ~CudnnObject() {
    if (p_) DALR_CUDNN_CHECK_NOTHROW(Destroy(p_));
  }
  CudnnObject(const CudnnObject&) = delete;
  CudnnObject& operator=(const CudnnObject&) = delete;
  S* get() const { return p_; }

 private:
  S* p_ = nullptr;
};
using TensorDesc =
    CudnnObject<cudnnTensorStruct, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    CudnnObject<cudnnFilterStruct, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = CudnnObject<cudnnConvolutionStruct, cudnnCreateConvolutionDescriptor,
                             cudnnDestroyConvolutionDescriptor>;
using PoolDesc =
    CudnnObject<cudnnPoolingStruct, cudnnCreatePoolingDescriptor, cudnnDestroyPoolingDescriptor>;

// cuDNN's legacy descriptors and cuBLAS's classic API take int sizes.
inline int to_int(int64_t v, const std::string& what) {
  if (v < 0 || v > INT_MAX)
    throw Error(what + " = " + std::to_string(v) +
                " does not fit the GPU libraries' 32-bit sizes (try a smaller --batch)");
  return static_cast<int>(v);
}

inline void set_desc(const TensorDesc& d, cudnnTensorFormat_t format, cudnnDataType_t type,
                     int64_t n, const ActShape& s) {
  DALR_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.get(), format, type, to_int(n, "batch"),
                                              to_int(s.c, "channels"), to_int(s.h, "height"),
                                              to_int(s.w, "width")));
}

// cuDNN 9 reports statuses as categories with sub-codes (NOT_SUPPORTED_SHAPE, ...).
inline bool in_category(cudnnStatus_t s, cudnnStatus_t category) {
#ifdef CUDNN_STATUS_CATEGORY
  return CUDNN_STATUS_CATEGORY(s) == category;
#else
  return s == category;
#endif
}
inline bool not_supported(cudnnStatus_t s) {
  return in_category(s, CUDNN_STATUS_NOT_SUPPORTED);
}

// The conv descriptor's math type is the precision policy for cuDNN. For float data,
// CUDNN_DEFAULT_MATH permits TF32 tensor cores on sm_80 and newer, CUDNN_FMA_MATH
// restricts cuDNN to FMA kernels (no TF32): Exact. Tf32 uses CUDNN_DEFAULT_MATH rather
// than CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which may also convert fp32 data down to
// fp16 (a narrower range than TF32). fp64 has no reduced mode to guard against.
template <typename T>
cudnnMathType_t conv_math(Math math) {
  if (std::is_same<T, float>::value && math == Math::Exact) return CUDNN_FMA_MATH;
  return CUDNN_DEFAULT_MATH;
}

// Second guard on the heuristic's suggestions: an algorithm whose own math type would
// need tensor-op math (or down-conversion) is skipped where the policy forbids it.
template <typename T>
bool math_allowed(cudnnMathType_t algo_math, Math math) {
  if (algo_math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  if (std::is_same<T, float>::value && math == Math::Exact)
    return algo_math != CUDNN_TENSOR_OP_MATH;
  return true;
}

}  // namespace dalr::cuda::fwd
