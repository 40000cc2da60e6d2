#include "cuda/context.hpp"

#include <cudnn.h>

#include <string>

#include "cuda/cudnn_check.hpp"

namespace dalr::cuda {

namespace {
// Makes `device` current before any stream or handle is created on it.
int select(int device) {
  if (device < 0 || device >= device_count())
    throw Error("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(device_count()) + " found)");
  DALR_CUDA_CHECK(cudaSetDevice(device));
  return device;
}
}  // namespace

cublasMath_t cublas_math(Math math) {
  // Exact: no TF32, no reduced-precision reductions. Tf32 only when the user asks.
  return math == Math::Tf32
             ? CUBLAS_TF32_TENSOR_OP_MATH
             : static_cast<cublasMath_t>(CUBLAS_PEDANTIC_MATH |
                                         CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
}

CublasMathScope::CublasMathScope(cublasHandle_t h, cublasMath_t mode) : h_(h) {
  DALR_CUBLAS_CHECK(cublasGetMathMode(h_, &previous_));
  DALR_CUBLAS_CHECK(cublasSetMathMode(h_, mode));
}

CublasMathScope::~CublasMathScope() {
  const cublasStatus_t s = cublasSetMathMode(h_, previous_);
  if (s != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "dalr: restoring the cuBLAS math mode failed: %s\n",
                 cublasGetStatusName(s));
}

Context::Context(int device, Math math) : device_(select(device)), math_(math), info_(1) {
  DALR_CUBLAS_CHECK(cublasCreate(&cublas_));
  DALR_CUBLAS_CHECK(cublasSetStream(cublas_, compute_.get()));
  DALR_CUBLAS_CHECK(cublasSetMathMode(cublas_, cublas_math(math)));
  DALR_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_));
  DALR_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, compute_.get()));
  DALR_CUSOLVER_CHECK(cusolverDnCreateParams(&params_));
}

Context::~Context() {
  if (cudnn_) DALR_CUDNN_CHECK_NOTHROW(cudnnDestroy(cudnn_));
  if (params_) cusolverDnDestroyParams(params_);
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cublas_) cublasDestroy(cublas_);
}

void* Context::workspace(size_t bytes) {
  if (bytes > work_.size()) {
    synchronize();
    work_ = DeviceBuffer<unsigned char>();  // free first: the old and new need not coexist
    work_ = DeviceBuffer<unsigned char>(bytes);
  }
  return work_.data();
}

void Context::make_current() const {
  DALR_CUDA_CHECK(cudaSetDevice(device_));
}

cudnnContext* Context::cudnn() {
  if (!cudnn_) {
    make_current();  // the handle belongs to the current device
    cudnnHandle_t h = nullptr;
    DALR_CUDNN_CHECK(cudnnCreate(&h));
    const cudnnStatus_t s = cudnnSetStream(h, compute_.get());
    if (s != CUDNN_STATUS_SUCCESS) DALR_CUDNN_CHECK_NOTHROW(cudnnDestroy(h));
    DALR_CUDNN_CHECK(s);
    cudnn_ = h;
  }
  return cudnn_;
}

void Context::release_workspace() {
  if (work_.empty()) return;
  synchronize();  // work in flight may still use it
  work_ = DeviceBuffer<unsigned char>();
}

void Context::check_info(const char* routine, const char* hint) {
  int info = 0;
  DALR_CUDA_CHECK(
      cudaMemcpyAsync(&info, info_.data(), sizeof(int), cudaMemcpyDeviceToHost, compute_.get()));
  synchronize();
  if (info == 0) return;
  std::string msg =
      std::string("cuSOLVER ") + routine + " failed (devInfo = " + std::to_string(info) + ")";
  if (info < 0)
    msg += ": parameter " + std::to_string(-info) + " is invalid (internal error)";
  else if (hint)
    msg += std::string(": ") + hint;
  throw Error(msg);
}

void Context::memory(size_t* free_bytes, size_t* total_bytes) {
  DALR_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void require_device_memory(size_t bytes, const std::string& what) {
  size_t free_b = 0, total_b = 0;
  Context::memory(&free_b, &total_b);
  if (bytes > free_b)
    throw Error("not enough GPU memory for " + what + ": needs " + std::to_string(bytes) +
                " bytes, " + std::to_string(free_b) + " free of " + std::to_string(total_b) +
                " (try --precision fp32, a smaller --batch, or --device cpu)");
}

void require_on_device(const void* p, int device, const std::string& what) {
  cudaPointerAttributes a{};
  DALR_CUDA_CHECK(cudaPointerGetAttributes(&a, p));
  const bool device_memory = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  if (!device_memory || a.device != device)
    throw Error(what + " batch: not memory of CUDA device " + std::to_string(device) +
                " (host batches go through add)");
}

}  // namespace dalr::cuda
