// The CUDA plumbing every GPU test rests on: the check macros' messages, the device
// count, and the RAII device buffer. The first two run everywhere; the buffer tests
// skip without a device.
#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "cuda/device.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "gpu_test.hpp"
#include "test_util.hpp"

namespace dc = dalr::cuda;

namespace {

using dalr::test::contains;

TEST(CudaCheck, ThrowsWithStatusNameCallAndPlace) {
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const dalr::Error& e) {
      return std::string(e.what());
    }
    return std::string("<no throw>");
  };
  // Statuses go through variables so that the names must come from the mapping.
  std::string m = message_of([] {
    cudaError_t rt = cudaErrorInvalidValue;
    DALR_CUDA_CHECK(rt);
  });
  EXPECT_TRUE(contains(m, "rt failed: cudaErrorInvalidValue")) << m;
  EXPECT_TRUE(contains(m, "test_cuda_plumbing.cpp:")) << m;
  m = message_of([] {
    cublasStatus_t blas = CUBLAS_STATUS_NOT_INITIALIZED;
    DALR_CUBLAS_CHECK(blas);
  });
  EXPECT_TRUE(contains(m, "blas failed: CUBLAS_STATUS_NOT_INITIALIZED")) << m;
  m = message_of([] {
    cusolverStatus_t solver = CUSOLVER_STATUS_INVALID_WORKSPACE;
    DALR_CUSOLVER_CHECK(solver);
  });
  EXPECT_TRUE(contains(m, "solver failed: CUSOLVER_STATUS_INVALID_WORKSPACE")) << m;
  EXPECT_EQ(message_of([] { DALR_CUDA_CHECK(cudaSuccess); }), "<no throw>");
}

TEST(CudaDevice, CountNeverThrows) {
  const int n = dc::device_count();
  EXPECT_GE(n, 0);
  EXPECT_EQ(dc::device_count(), n);
  // With a device, no error is left behind. Without a driver every runtime call,
  // cudaGetLastError included, reports cudaErrorInsufficientDriver: nothing to clear.
  if (n > 0) {
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  }
  std::cout << "[ devices  ] " << n << (n ? " (" + dc::device_name(0) + ")" : "") << "\n";
}

TEST(DeviceBuffer, RoundTripCloneMove) {
  DALR_SKIP_WITHOUT_GPU();
  dc::Stream stream;
  std::vector<float> h(1000);
  for (size_t i = 0; i < h.size(); ++i) h[i] = 0.5f * float(i) - 3.f;
  dc::DeviceBuffer<float> a(h.size());
  a.upload(h.data(), h.size(), stream);
  dc::DeviceBuffer<float> b = a.clone(stream);
  dc::DeviceBuffer<float> c(std::move(b));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.data(), nullptr);
  std::vector<float> back(h.size(), -1.f);
  c.download(back.data(), back.size(), stream);
  stream.synchronize();
  EXPECT_EQ(back, h);
  EXPECT_THROW(c.upload(h.data(), h.size() + 1, stream), dalr::Error);
  dc::DeviceBuffer<float> empty(0);
  EXPECT_EQ(empty.data(), nullptr);
}

TEST(DeviceBuffer, HugeAllocationThrowsWithBytes) {
  DALR_SKIP_WITHOUT_GPU();
  const size_t pib = size_t(1) << 50;
  try {
    dc::DeviceBuffer<char> b(pib);
    FAIL() << "a 1 PiB allocation succeeded";
  } catch (const dalr::Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, std::to_string(pib) + " bytes")) << m;
    EXPECT_TRUE(contains(m, "free")) << m;
  }
  dc::DeviceBuffer<float> ok(1000);  // the failure must not poison later calls
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
