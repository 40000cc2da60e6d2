// GpuStats<T>: the GPU twin of LayerStats<T> (src/cpu/stats.cpp).
//
// Streaming with two staging slots, each a pinned host buffer, a device buffer (n x
// max_batch) and two events:
//   uploaded_i  (copy stream)    the H2D copy out of pinned buffer i has finished, so
//                                the host may overwrite it;
//   consumed_i  (compute stream) SYRK / GEMM / row kernels have finished reading device
//                                buffer i, so the next upload may overwrite it.
// add(): host waits on uploaded_i, checks and packs the batch into pinned i; the copy
// stream waits on consumed_i, uploads, records uploaded_i; the compute stream waits on
// uploaded_i, updates C (lower triangle), the per-unit sums/maxima and, when m > 0,
// Y = W X and its relu(. + b) sums/maxima; then records consumed_i. So while the GPU
// works on batch k, the host packs batch k+1 and the copy engine uploads it; nothing
// inside the loop synchronises a whole stream or the device.
//
// add_device() (batches already on the device, e.g. tapped from the GPU forward pass)
// uses the same slots and events, with the producer's stream in the copy stream's place:
// see its comment. NaN/Inf there are found by a kernel that lowers a device word (the
// first bad sample and unit); the word is read back at result() and, without waiting,
// by a later add_device() (see throw_if_seen).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/finite.hpp"
#include "common/memory_terms.hpp"
#include "cuda/blas.hpp"
#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "cuda/device_gram.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "non_finite.cuh"
#include "row_stats.cuh"

namespace dalr::cuda {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// The statistics' dimension limit (kept when the cuBLAS calls moved to the 64-bit API).
void check_dim(int64_t v, const char* what) {
  if (v > INT_MAX)
    throw Error(std::string("GPU statistics: ") + what + " = " + std::to_string(v) +
                " exceeds the cuBLAS dimension limit " + std::to_string(INT_MAX));
}

template <typename T>
void validate(int64_t n, int64_t m, const Matrix<T>* w, const std::vector<T>* b,
              int64_t max_batch) {
  if (n <= 0 || m < 0) throw Error("statistics need a positive input width");
  if (max_batch <= 0)
    throw Error("GPU statistics need a positive batch size (max_batch = " +
                std::to_string(max_batch) + ")");
  check_dim(n, "input width n");
  check_dim(m, "output width m");
  check_dim(max_batch, "max_batch");
  if (m > 0) {
    const bool ok = w && b && w->rows == m && w->cols == n &&
                    static_cast<int64_t>(w->data.size()) == m * n &&
                    static_cast<int64_t>(b->size()) == m;
    if (!ok)
      throw Error("output statistics need the layer's weight (m x n) and bias: expected " +
                  std::to_string(m) + " x " + std::to_string(n) + " and " + std::to_string(m) +
                  ", got " +
                  (w ? std::to_string(w->rows) + " x " + std::to_string(w->cols) : "no weight") +
                  " and " + (b ? std::to_string(b->size()) : "no bias"));
  }
}

// Argument errors come before device errors: validates, then returns the shared context,
// or without one makes a context of its own (only for valid arguments).
template <typename T>
std::shared_ptr<Context> validated(std::shared_ptr<Context> shared, int device, Math math,
                                   int64_t n, int64_t m, const Matrix<T>* w,
                                   const std::vector<T>* b, int64_t max_batch) {
  validate(n, m, w, b, max_batch);
  return shared ? std::move(shared) : std::make_shared<Context>(device, math);
}

}  // namespace

template <typename T>
struct GpuStats<T>::Impl {
  // One staging slot of the double buffer.
  struct Slot {
    explicit Slot(size_t elems)
        : host(elems),
          dev(elems),
          // The host blocks on `uploaded` (yielding its core to the decoding threads rather
          // than spinning); nobody times these events.
          uploaded(cudaEventDisableTiming | cudaEventBlockingSync),
          consumed(cudaEventDisableTiming),
          seen(1) {
      seen[0] = kernels::kAllFinite;
    }
    PinnedBuffer<T> host;
    DeviceBuffer<T> dev;
    Event uploaded, consumed;
    // The device NaN/Inf word as of this slot's last add_device(): copied on the compute
    // stream before `consumed` is recorded, so readable once `consumed` has completed.
    PinnedBuffer<unsigned long long> seen;
  };

  // First members: the context is released last, after everything allocated on it. It
  // may be shared (the backend's): its streams then carry other work too, which the
  // events below neither wait for nor disturb.
  std::shared_ptr<Context> owner;
  Context& ctx;
  int64_t n, m, max_batch;
  int64_t count = 0;
  DeviceBuffer<T> c, w, b, y;
  DeviceBuffer<double> sum_x, max_x, sum_y, max_y;
  DeviceBuffer<unsigned long long> first_bad;  // kernels::non_finite_key, device path only
  std::vector<Slot> slots;
  int next = 0;
  // Statistics merged from earlier runs, kept on the host: they are tiny and are folded
  // in by result(). (The Gram part is added on the device, into C.)
  std::vector<double> merged_sum_x, merged_max_x, merged_sum_y, merged_max_y;
  bool finished = false;  // finish() handed C over: nothing may follow

  // shared: the context to run on, or null to make one on `device` with `math`.
  Impl(std::shared_ptr<Context> shared, int device, Math math, int64_t n_, int64_t m_,
       const Matrix<T>* w_, const std::vector<T>* b_, int64_t max_batch_)
      : owner(validated(std::move(shared), device, math, n_, m_, w_, b_, max_batch_)),
        ctx(*owner),
        n(n_),
        m(m_),
        max_batch(max_batch_),
        merged_sum_x(static_cast<size_t>(n_), 0.0),
        merged_max_x(static_cast<size_t>(n_), kNegInf),
        merged_sum_y(static_cast<size_t>(m_), 0.0),
        merged_max_y(static_cast<size_t>(m_), kNegInf) {
    bind();  // a shared context's device need not be current; everything below is on it
    const size_t un = static_cast<size_t>(n), um = static_cast<size_t>(m),
                 ub = static_cast<size_t>(max_batch);
    // C, the staging blocks, W, b, Y, the sums, and a reserve (common/memory_terms.cpp).
    const size_t need = saturated_size(total_bytes(gpu_stats_terms(n, m, max_batch, sizeof(T))));
    require_device_memory(need, "GPU statistics (n = " + std::to_string(n) + ", m = " +
                                    std::to_string(m) + ", batch " + std::to_string(max_batch) +
                                    ", " + std::to_string(sizeof(T) * 8) + "-bit)");
    DALR_CUBLAS_CHECK(cublasSetPointerMode(ctx.cublas(), CUBLAS_POINTER_MODE_HOST));

    const cudaStream_t s = ctx.stream();
    c = DeviceBuffer<T>(un * un);
    DALR_CUDA_CHECK(cudaMemsetAsync(c.data(), 0, c.bytes(), s));
    sum_x = DeviceBuffer<double>(un);
    max_x = DeviceBuffer<double>(un);
    DALR_CUDA_CHECK(cudaMemsetAsync(sum_x.data(), 0, sum_x.bytes(), s));  // +0.0 is all zeros
    max_x.upload(merged_max_x.data(), un, s);                             // -inf
    first_bad = DeviceBuffer<unsigned long long>(1);
    DALR_CUDA_CHECK(cudaMemsetAsync(first_bad.data(), 0xFF, first_bad.bytes(), s));  // kAllFinite
    if (m > 0) {
      sum_y = DeviceBuffer<double>(um);
      max_y = DeviceBuffer<double>(um);
      DALR_CUDA_CHECK(cudaMemsetAsync(sum_y.data(), 0, sum_y.bytes(), s));
      max_y.upload(merged_max_y.data(), um, s);
      w = DeviceBuffer<T>(um * un);
      w.upload(w_->ptr(), um * un, s);
      b = DeviceBuffer<T>(um);
      b.upload(b_->data(), um, s);
      y = DeviceBuffer<T>(um * ub);
    }
    slots.reserve(2);
    slots.emplace_back(un * ub);
    slots.emplace_back(un * ub);
    // The uploads above read pageable host memory owned by the caller and by this object;
    // finish them before returning.
    ctx.synchronize();
  }

  ~Impl() {
    // Work in flight reads the pinned and device buffers freed by the members' destructors.
    DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(ctx.device()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.copy_stream()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.stream()));
  }

  // Several objects may live on different devices; the runtime's current device is per thread.
  void bind() const { DALR_CUDA_CHECK(cudaSetDevice(ctx.device())); }

  // The free slot: its pinned buffer is no longer read by an upload in flight.
  Slot& acquire() {
    Slot& sl = slots[static_cast<size_t>(next)];
    sl.uploaded.synchronize();
    return sl;
  }

  // Uploads the first `elems` of the slot's pinned buffer once the compute stream has
  // finished with its device buffer, and makes the compute stream wait for the upload.
  void upload(Slot& sl, size_t elems) {
    const cudaStream_t copy = ctx.copy_stream();
    DALR_CUDA_CHECK(cudaStreamWaitEvent(copy, sl.consumed.get(), 0));
    sl.dev.upload(sl.host.data(), elems, copy);
    sl.uploaded.record(copy);
    DALR_CUDA_CHECK(cudaStreamWaitEvent(ctx.stream(), sl.uploaded.get(), 0));
  }

  // Marks the slot's device buffer as read by everything queued so far; next slot.
  void release(Slot& sl) {
    sl.consumed.record(ctx.stream());
    next ^= 1;
  }

  // The checks add() and add_device() share (cols > 0).
  void check_batch(const T* x, int64_t cols, int64_t ldx) const {
    if (!x) throw Error("activation batch: no data (null pointer)");
    if (ldx < n) throw Error("activation batch: leading dimension smaller than the width");
    if (cols > max_batch)
      throw Error("activation batch of " + std::to_string(cols) +
                  " samples exceeds the GPU batch size " + std::to_string(max_batch) +
                  " (split the batch or raise max_batch)");
  }

  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) {
    if (cols <= 0) return;
    check_batch(x, cols, ldx);
    bind();
    Slot& sl = acquire();
    // Check and pack (ld n) in one pass, column by column while it is in cache. A throw
    // leaves nothing queued on this slot and the statistics unchanged.
    const size_t un = static_cast<size_t>(n);
    for (int64_t j = 0; j < cols; ++j) {
      const T* col = x + j * ldx;
      check_finite(col, n, 1, ldx, first_index + j);
      std::memcpy(sl.host.data() + static_cast<size_t>(j) * un, col, un * sizeof(T));
    }
    upload(sl, un * static_cast<size_t>(cols));
    accumulate(sl, cols);
    release(sl);
    count += cols;
  }

  // Queues the statistics of the slot's device buffer (n x cols, ld n) on the compute
  // stream, which already waits for the buffer's upload.
  void accumulate(Slot& sl, int64_t cols) {
    const cudaStream_t s = ctx.stream();
    const T one = 1, zero = 0;
    // C += X X^T, lower triangle: the call LayerStats makes with cblas_<t>syrk.
    DALR_CUBLAS_CHECK(blas::syrk(ctx.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, cols, &one,
                                 sl.dev.data(), n, &one, c.data(), n));
    kernels::launch_row_sum_max<T>(sl.dev.data(), n, cols, n, nullptr, false, sum_x.data(),
                                   max_x.data(), s);
    if (m > 0) {
      // Y = W X (m x cols), then sums and maxima of relu(Y + b).
      DALR_CUBLAS_CHECK(blas::gemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, m, cols, n, &one,
                                   w.data(), m, sl.dev.data(), n, &zero, y.data(), m));
      kernels::launch_row_sum_max<T>(y.data(), m, cols, m, b.data(), true, sum_y.data(),
                                     max_y.data(), s);
    }
  }

  // A batch the producer made on the device. Its block is copied into a slot ON THE
  // PRODUCER'S STREAM: after the producer's work that writes it, and before anything the
  // producer queues later, which may overwrite it (the forward pass reuses its buffers
  // for the next layers and the next batch). Reading the block in place on our stream
  // would instead need the producer to wait for our SYRK; the copy is one pass over the
  // block at device bandwidth and lets the forward pass of batch k+1 run while batch k's
  // statistics are computed. Before the copy the producer's stream waits for `consumed`
  // (our last reads of this slot); after it, `uploaded` is recorded there and our stream
  // waits for it: the two events of the host path, with the producer's stream in the
  // copy stream's place. No host wait.
  void add_device(const T* dx, int64_t cols, int64_t ldx, int64_t first_index, void* stream) {
    if (cols <= 0) return;
    check_batch(dx, cols, ldx);
    check_sample_range(first_index, cols);
    bind();
    check_on_device(dx);
    Slot& sl = slots[static_cast<size_t>(next)];
    throw_if_seen(sl);

    const cudaStream_t producer = static_cast<cudaStream_t>(stream);
    const size_t col_bytes = static_cast<size_t>(n) * sizeof(T);
    DALR_CUDA_CHECK(cudaStreamWaitEvent(producer, sl.consumed.get(), 0));
    if (ldx == n)  // one contiguous block (no pitch limit)
      DALR_CUDA_CHECK(cudaMemcpyAsync(sl.dev.data(), dx, col_bytes * static_cast<size_t>(cols),
                                      cudaMemcpyDeviceToDevice, producer));
    else
      DALR_CUDA_CHECK(cudaMemcpy2DAsync(
          sl.dev.data(), col_bytes, dx, static_cast<size_t>(ldx) * sizeof(T), col_bytes,
          static_cast<size_t>(cols), cudaMemcpyDeviceToDevice, producer));
    sl.uploaded.record(producer);

    const cudaStream_t s = ctx.stream();
    DALR_CUDA_CHECK(cudaStreamWaitEvent(s, sl.uploaded.get(), 0));
    kernels::launch_find_non_finite<T>(sl.dev.data(), n, cols, n, first_index, first_bad.data(), s);
    DALR_CUDA_CHECK(cudaMemcpyAsync(sl.seen.data(), first_bad.data(), sizeof(unsigned long long),
                                    cudaMemcpyDeviceToHost, s));
    accumulate(sl, cols);
    release(sl);
    count += cols;
  }

  // The NaN/Inf key of the batch's last sample must stay below kernels::kAllFinite.
  void check_sample_range(int64_t first_index, int64_t cols) const {
    const uint64_t limit = (kernels::kAllFinite - 1) / 2 / static_cast<uint64_t>(n);
    if (first_index < 0 || static_cast<uint64_t>(first_index) + static_cast<uint64_t>(cols) > limit)
      throw Error("activation batch: first sample index " + std::to_string(first_index) +
                  " out of range for the GPU statistics");
  }

  void check_on_device(const T* dx) const { require_on_device(dx, ctx.device(), "activation"); }

  // Throws LayerStats::add's message if a NaN/Inf has been met on the device path.
  void throw_if_bad(unsigned long long key) const {
    if (key == kernels::kAllFinite) return;
    const kernels::NonFinite bad = kernels::decode_non_finite(key, n);
    throw Error(non_finite_message(bad.sample, bad.unit, bad.is_nan));
  }

  // Early report, without waiting: reads the slot's copy of the NaN/Inf word only once
  // the slot's `consumed` has completed (recorded after that copy; no later write to it
  // is queued before this slot's next add_device). So a bad batch is reported two
  // add_device() calls later when the GPU has caught up, else by result().
  void throw_if_seen(const Slot& sl) const {
    const cudaError_t e = cudaEventQuery(sl.consumed.get());
    if (e == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error; clear it in case the runtime recorded it
      return;
    }
    DALR_CUDA_CHECK(e);
    throw_if_bad(sl.seen[0]);
  }

  void merge(const LayerStats<T>& e) {
    if (e.n() != n || e.m() != m)
      throw Error("cannot merge statistics of different shapes (n " + std::to_string(n) + " vs " +
                  std::to_string(e.n()) + ", m " + std::to_string(m) + " vs " +
                  std::to_string(e.m()) + ")");
    bind();
    // C += earlier C, streamed through the staging slots max_batch columns at a time, so
    // no second n x n buffer is needed. Whole columns are added; only the lower triangle
    // is ever read back.
    const Matrix<T>& g = e.gram();
    const size_t un = static_cast<size_t>(n);
    for (int64_t j0 = 0; j0 < n; j0 += max_batch) {
      const size_t elems = un * static_cast<size_t>(std::min(max_batch, n - j0));
      Slot& sl = acquire();
      std::memcpy(sl.host.data(), g.ptr() + static_cast<size_t>(j0) * un, elems * sizeof(T));
      upload(sl, elems);
      const T one = 1;  // C(:, j0 : j0 + cols) += the chunk
      DALR_CUBLAS_CHECK(blas::axpy(ctx.cublas(), static_cast<int64_t>(elems), &one, sl.dev.data(),
                                   1, c.data() + static_cast<size_t>(j0) * un, 1));
      release(sl);
    }
    fold(merged_sum_x, merged_max_x, e.sum_x(), e.max_x());
    fold(merged_sum_y, merged_max_y, e.sum_y(), e.max_y());
    count += e.count();
  }

  static void fold(std::vector<double>& sum, std::vector<double>& max,
                   const std::vector<double>& osum, const std::vector<double>& omax) {
    for (size_t i = 0; i < sum.size(); ++i) {
      sum[i] += osum[i];
      max[i] = std::max(max[i], omax[i]);
    }
  }

  LayerStats<T> result() { return collect(/*keep_c=*/false); }

  // result() without the download of C: C stays on the device (DeviceGram) and comes
  // to the host only if something there reads it (LayerStats::from_device).
  LayerStats<T> finish() {
    LayerStats<T> st = collect(/*keep_c=*/true);
    finished = true;
    return st;
  }

  LayerStats<T> collect(bool keep_c) {
    bind();
    const cudaStream_t s = ctx.stream();
    const size_t un = static_cast<size_t>(n), um = static_cast<size_t>(m);
    // The compute stream waits for every upload, so queuing the downloads after it and
    // synchronising it covers all work. Only C's lower triangle is meaningful.
    unsigned long long bad = kernels::kAllFinite;
    DALR_CUDA_CHECK(
        cudaMemcpyAsync(&bad, first_bad.data(), sizeof(bad), cudaMemcpyDeviceToHost, s));
    Matrix<T> gram;
    if (!keep_c) {
      gram = Matrix<T>(n, n);
      c.download(gram.ptr(), un * un, s);
    }
    std::vector<double> sx(un), mx(un), sy(um), my(um);
    sum_x.download(sx.data(), un, s);
    max_x.download(mx.data(), un, s);
    if (m > 0) {
      sum_y.download(sy.data(), um, s);
      max_y.download(my.data(), um, s);
    }
    ctx.synchronize();
    throw_if_bad(bad);
    fold(sx, mx, merged_sum_x, merged_max_x);
    fold(sy, my, merged_sum_y, merged_max_y);
    if (!keep_c)
      return LayerStats<T>::from_parts(count, std::move(gram), std::move(sx), std::move(mx),
                                       std::move(sy), std::move(my));
    return LayerStats<T>::from_device(
        count, n, std::make_shared<DeviceGram<T>>(ctx.device(), n, std::move(c)), std::move(sx),
        std::move(mx), std::move(sy), std::move(my));
  }

  void require_open() const {
    if (finished) throw Error("GpuStats: finish() was called; no batch may follow");
  }
};

template <typename T>
GpuStats<T>::GpuStats(int64_t n, int64_t m, const Matrix<T>* w, const std::vector<T>* b,
                      int64_t max_batch, Math math, int device)
    : impl_(std::make_unique<Impl>(nullptr, device, math, n, m, w, b, max_batch)) {}

template <typename T>
GpuStats<T>::GpuStats(std::shared_ptr<Context> ctx, int64_t n, int64_t m, const Matrix<T>* w,
                      const std::vector<T>* b, int64_t max_batch) {
  if (!ctx) throw Error("GpuStats: no CUDA context");
  const int device = ctx->device();
  const Math math = ctx->math();
  impl_ = std::make_unique<Impl>(std::move(ctx), device, math, n, m, w, b, max_batch);
}

template <typename T>
GpuStats<T>::~GpuStats() = default;

template <typename T>
void GpuStats<T>::add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) {
  impl_->require_open();
  impl_->add(x, cols, ldx, first_index);
}

template <typename T>
void GpuStats<T>::add_device(const T* dx, int64_t cols, int64_t ldx, int64_t first_index,
                             void* stream) {
  impl_->require_open();
  impl_->add_device(dx, cols, ldx, first_index, stream);
}

template <typename T>
LayerStats<T> GpuStats<T>::result() {
  impl_->require_open();
  return impl_->result();
}

template <typename T>
LayerStats<T> GpuStats<T>::finish() {
  impl_->require_open();
  return impl_->finish();
}

template <typename T>
void GpuStats<T>::merge(const LayerStats<T>& earlier) {
  impl_->require_open();
  impl_->merge(earlier);
}

template class GpuStats<float>;
template class GpuStats<double>;

}  // namespace dalr::cuda
