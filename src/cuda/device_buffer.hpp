#pragma once
// RAII owners for device memory, pinned host memory, streams and events. All are
// move-only; copies of device data are explicit (clone). Destructors never throw.
// Copies are asynchronous on the given stream: synchronise before reading a download
// or before reusing the host side of an upload.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "cuda/cuda_check.hpp"

namespace dalr::cuda {

namespace detail {

inline size_t checked_bytes(size_t n, size_t elem, const char* what) {
  if (n > SIZE_MAX / elem)
    throw Error(std::string(what) + ": " + std::to_string(n) + " elements of " +
                std::to_string(elem) + " bytes overflow size_t");
  return n * elem;
}

// cudaMalloc, with an out-of-memory error that says how much was asked and how much is free.
inline void* device_malloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky, but clear it so later checks start clean
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    int dev = -1;
    cudaGetDevice(&dev);
    throw Error("out of GPU memory: cudaMalloc asked for " + std::to_string(bytes) +
                " bytes; device " + std::to_string(dev) + " has " + std::to_string(free_b) +
                " bytes free of " + std::to_string(total_b));
  }
  DALR_CUDA_CHECK(e);
  return p;
}

inline void check_count(size_t n, size_t cap, const char* what) {
  if (n > cap)
    throw Error(std::string(what) + ": " + std::to_string(n) + " elements into a buffer of " +
                std::to_string(cap));
}

}  // namespace detail

namespace detail {

// Sole owner of an array of n T that `Free` (cudaFree or cudaFreeHost) releases:
// move-only, released on destruction or reset(), never throwing there.
template <typename T, cudaError_t (*Free)(void*)>
class OwnedArray {
 public:
  OwnedArray() = default;
  ~OwnedArray() { reset(); }
  OwnedArray(const OwnedArray&) = delete;
  OwnedArray& operator=(const OwnedArray&) = delete;
  OwnedArray(OwnedArray&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  OwnedArray& operator=(OwnedArray&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  bool empty() const { return n_ == 0; }

  void reset() noexcept {
    if (ptr_) DALR_CUDA_CHECK_NOTHROW(Free(ptr_));
    ptr_ = nullptr;
    n_ = 0;
  }

 protected:
  OwnedArray(T* p, size_t n) : ptr_(p), n_(n) {}

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Sole owner of a CUDA handle (event, stream) that `Destroy` releases: move-only.
template <typename H, cudaError_t (*Destroy)(H)>
class OwnedHandle {
 public:
  ~OwnedHandle() { reset(); }
  OwnedHandle(const OwnedHandle&) = delete;
  OwnedHandle& operator=(const OwnedHandle&) = delete;
  OwnedHandle(OwnedHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  OwnedHandle& operator=(OwnedHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }

  H get() const { return h_; }
  void reset() noexcept {
    if (h_) DALR_CUDA_CHECK_NOTHROW(Destroy(h_));
    h_ = nullptr;
  }

 protected:
  OwnedHandle() = default;
  H h_ = nullptr;
};

}  // namespace detail

// Device memory.
template <typename T>
class DeviceBuffer : public detail::OwnedArray<T, cudaFree> {
  using Base = detail::OwnedArray<T, cudaFree>;

 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n)
      : Base(n ? static_cast<T*>(
                     detail::device_malloc(detail::checked_bytes(n, sizeof(T), "DeviceBuffer")))
               : nullptr,
             n) {}

  DeviceBuffer clone(cudaStream_t stream) const {
    DeviceBuffer out(this->size());
    if (!this->empty())
      DALR_CUDA_CHECK(cudaMemcpyAsync(out.data(), this->data(), this->bytes(),
                                      cudaMemcpyDeviceToDevice, stream));
    return out;
  }
  // Copies n elements from host src into the start of the buffer.
  void upload(const T* src, size_t n, cudaStream_t stream) {
    detail::check_count(n, this->size(), "DeviceBuffer::upload");
    if (n)
      DALR_CUDA_CHECK(
          cudaMemcpyAsync(this->data(), src, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  // Copies the first n elements of the buffer to host dst.
  void download(T* dst, size_t n, cudaStream_t stream) const {
    detail::check_count(n, this->size(), "DeviceBuffer::download");
    if (n)
      DALR_CUDA_CHECK(
          cudaMemcpyAsync(dst, this->data(), n * sizeof(T), cudaMemcpyDeviceToHost, stream));
  }
};

// Page-locked host memory: the host side of asynchronous copies.
template <typename T>
class PinnedBuffer : public detail::OwnedArray<T, cudaFreeHost> {
  using Base = detail::OwnedArray<T, cudaFreeHost>;

 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t n) : Base(allocate(n), n) {}

  T& operator[](size_t i) { return this->data()[i]; }
  const T& operator[](size_t i) const { return this->data()[i]; }

 private:
  static T* allocate(size_t n) {
    if (!n) return nullptr;
    void* p = nullptr;
    DALR_CUDA_CHECK(cudaMallocHost(&p, detail::checked_bytes(n, sizeof(T), "PinnedBuffer")));
    return static_cast<T*>(p);
  }
};

class Event : public detail::OwnedHandle<cudaEvent_t, cudaEventDestroy> {
 public:
  explicit Event(unsigned flags = cudaEventDefault) {
    DALR_CUDA_CHECK(cudaEventCreateWithFlags(&h_, flags));
  }

  void record(cudaStream_t s) { DALR_CUDA_CHECK(cudaEventRecord(h_, s)); }
  void synchronize() const { DALR_CUDA_CHECK(cudaEventSynchronize(h_)); }
  // Milliseconds from start to this event (both recorded, timing enabled).
  float elapsed_ms_since(const Event& start) const {
    float ms = 0.f;
    DALR_CUDA_CHECK(cudaEventElapsedTime(&ms, start.h_, h_));
    return ms;
  }
};

// Records `e` on `s` when the scope is left, by a return or by an exception.
class RecordOnExit {
 public:
  RecordOnExit(const Event& e, cudaStream_t s) : e_(e), s_(s) {}
  ~RecordOnExit() { DALR_CUDA_CHECK_NOTHROW(cudaEventRecord(e_.get(), s_)); }
  RecordOnExit(const RecordOnExit&) = delete;
  RecordOnExit& operator=(const RecordOnExit&) = delete;

 private:
  const Event& e_;
  cudaStream_t s_;
};

class Stream : public detail::OwnedHandle<cudaStream_t, cudaStreamDestroy> {
 public:
  // Non-blocking: work here does not serialise with the legacy default stream.
  Stream() { DALR_CUDA_CHECK(cudaStreamCreateWithFlags(&h_, cudaStreamNonBlocking)); }

  operator cudaStream_t() const { return h_; }
  void synchronize() const { DALR_CUDA_CHECK(cudaStreamSynchronize(h_)); }
  void wait(const Event& e) const { DALR_CUDA_CHECK(cudaStreamWaitEvent(h_, e.get(), 0)); }
};

}  // namespace dalr::cuda
