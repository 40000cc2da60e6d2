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

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n)
      : ptr_(n ? static_cast<T*>(
                     detail::device_malloc(detail::checked_bytes(n, sizeof(T), "DeviceBuffer")))
               : nullptr),
        n_(n) {}
  ~DeviceBuffer() { reset(); }

  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
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

  DeviceBuffer clone(cudaStream_t stream) const {
    DeviceBuffer out(n_);
    if (n_)
      DALR_CUDA_CHECK(cudaMemcpyAsync(out.ptr_, ptr_, bytes(), cudaMemcpyDeviceToDevice, stream));
    return out;
  }
  // Copies n elements from host src into the start of the buffer.
  void upload(const T* src, size_t n, cudaStream_t stream) {
    detail::check_count(n, n_, "DeviceBuffer::upload");
    if (n)
      DALR_CUDA_CHECK(cudaMemcpyAsync(ptr_, src, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  // Copies the first n elements of the buffer to host dst.
  void download(T* dst, size_t n, cudaStream_t stream) const {
    detail::check_count(n, n_, "DeviceBuffer::download");
    if (n)
      DALR_CUDA_CHECK(cudaMemcpyAsync(dst, ptr_, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
  }

  void reset() noexcept {
    if (ptr_) DALR_CUDA_CHECK_NOTHROW(cudaFree(ptr_));
    ptr_ = nullptr;
    n_ = 0;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory: the host side of asynchronous copies.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t n) : n_(n) {
    if (n) {
      void* p = nullptr;
      DALR_CUDA_CHECK(cudaMallocHost(&p, detail::checked_bytes(n, sizeof(T), "PinnedBuffer")));
      ptr_ = static_cast<T*>(p);
    }
  }
  ~PinnedBuffer() { reset(); }

  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
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
  T& operator[](size_t i) { return ptr_[i]; }
  const T& operator[](size_t i) const { return ptr_[i]; }

  void reset() noexcept {
    if (ptr_) DALR_CUDA_CHECK_NOTHROW(cudaFreeHost(ptr_));
    ptr_ = nullptr;
    n_ = 0;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

class Event {
 public:
  explicit Event(unsigned flags = cudaEventDefault) {
    DALR_CUDA_CHECK(cudaEventCreateWithFlags(&ev_, flags));
  }
  ~Event() { reset(); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : ev_(std::exchange(o.ev_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {
    if (this != &o) {
      reset();
      ev_ = std::exchange(o.ev_, nullptr);
    }
    return *this;
  }

  cudaEvent_t get() const { return ev_; }
  void record(cudaStream_t s) { DALR_CUDA_CHECK(cudaEventRecord(ev_, s)); }
  void synchronize() const { DALR_CUDA_CHECK(cudaEventSynchronize(ev_)); }
  // Milliseconds from start to this event (both recorded, timing enabled).
  float elapsed_ms_since(const Event& start) const {
    float ms = 0.f;
    DALR_CUDA_CHECK(cudaEventElapsedTime(&ms, start.ev_, ev_));
    return ms;
  }
  void reset() noexcept {
    if (ev_) DALR_CUDA_CHECK_NOTHROW(cudaEventDestroy(ev_));
    ev_ = nullptr;
  }

 private:
  cudaEvent_t ev_ = nullptr;
};

class Stream {
 public:
  // Non-blocking: work here does not serialise with the legacy default stream.
  Stream() { DALR_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { reset(); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }

  cudaStream_t get() const { return s_; }
  operator cudaStream_t() const { return s_; }
  void synchronize() const { DALR_CUDA_CHECK(cudaStreamSynchronize(s_)); }
  void wait(const Event& e) const { DALR_CUDA_CHECK(cudaStreamWaitEvent(s_, e.get(), 0)); }
  void reset() noexcept {
    if (s_) DALR_CUDA_CHECK_NOTHROW(cudaStreamDestroy(s_));
    s_ = nullptr;
  }

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace dalr::cuda
