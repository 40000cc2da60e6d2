#pragma once
// Streaming statistics of one fc layer's input activations x (n) and, when the
// layer's weight is given, of its output relu(W x + b) (m): everything the solvers
// need, in memory independent of the number of samples.
//   gram   C = sum_j x_j x_j^T          (n x n; accumulated in T with SYRK)
//   sum_x, max_x                         per input unit (double)
//   sum_y, max_y                         per output unit of relu(W x + b) (double)
//   count  number of samples p
// Statistics can be saved, loaded, merged and resumed with more data.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dalr/matrix.hpp"

namespace dalr {
class Communicator;
}

namespace dalr {

template <typename T>
class LayerStats {
 public:
  LayerStats() = default;
  // n: input width; m: output width (0 = do not keep output statistics).
  LayerStats(int64_t n, int64_t m);

  // Adds a batch: x is n x cols, column-major with leading dimension ldx (one sample
  // per column). w (m x n) and b (m) are needed when m > 0. Throws dalr::Error on
  // NaN/Inf, naming the sample (first_index + column) and the unit.
  // Statistics computed elsewhere (the GPU twin): gram must be n x n and symmetric (or
  // hold at least its lower triangle), the vectors n, n, m, m long. Throws on bad shapes.
  static LayerStats from_parts(int64_t count, Matrix<T> gram, std::vector<double> sum_x,
                               std::vector<double> max_x, std::vector<double> sum_y,
                               std::vector<double> max_y);

  void add(const T* x, int64_t cols, int64_t ldx, const Matrix<T>* w, const T* b,
           int64_t first_index = 0);
  void merge(const LayerStats& other);  // same n and m, else throws
  // Combines every rank's statistics (same n and m on all; a rank with no samples holds
  // zeros and -Inf maxima) into rank 0's: C, the sums and the count summed, the maxima
  // maximised. The other ranks' statistics are unspecified afterwards. Every rank calls it.
  void reduce_to_root(Communicator& comm);

  // A copy of C that the backend which accumulated it keeps on its device (the GPU's
  // statistics keep their C there), so that the same backend's solve and error need not
  // upload C again. Shared by copies of these statistics; dropped by add() and merge(),
  // which change C.
  class DeviceCopy {
   public:
    virtual ~DeviceCopy() = default;
    // C's lower triangle (at least) into host (n x n, column-major).
    virtual void download(T* host) const = 0;
    virtual double trace() const = 0;
    // Sums every rank's copy into rank 0's, on the devices (Communicator::
    // sum_to_root_device); false when that cannot be done (nothing changed then).
    virtual bool sum_to_root(Communicator& comm) const;  // base: takes part, cannot
  };
  // Statistics whose C exists only as `device` until something reads it on the host
  // (gram(), save(), add(), merge()): then it is downloaded once.
  static LayerStats from_device(int64_t count, int64_t n, std::shared_ptr<const DeviceCopy> device,
                                std::vector<double> sum_x, std::vector<double> max_x,
                                std::vector<double> sum_y, std::vector<double> max_y);
  void attach_device_copy(std::shared_ptr<const DeviceCopy> copy);  // keeps C on the host
  const DeviceCopy* device_copy() const { return device_.get(); }

  int64_t n() const { return n_; }
  int64_t m() const { return m_; }
  int64_t count() const { return count_; }
  const Matrix<T>& gram() const;  // full symmetric C
  const std::vector<double>& sum_x() const { return sum_x_; }
  const std::vector<double>& max_x() const { return max_x_; }
  const std::vector<double>& sum_y() const { return sum_y_; }
  const std::vector<double>& max_y() const { return max_y_; }
  std::vector<double> mean_x() const;
  std::vector<double> mean_y() const;
  double gram_trace() const;

  // safetensors file: tensors gram, sum_x, max_x (+ sum_y, max_y), metadata
  // dalr.kind=stats, dalr.count, dalr.precision and what `extra` adds.
  void save(const std::string& path, const std::map<std::string, std::string>& extra = {}) const;
  static LayerStats load(const std::string& path,
                         std::map<std::string, std::string>* meta = nullptr);

 private:
  int64_t n_ = 0, m_ = 0, count_ = 0;
  mutable Matrix<T> gram_;  // SYRK keeps the lower triangle; upper filled on demand
  mutable bool symmetric_ = true;
  std::vector<double> sum_x_, max_x_, sum_y_, max_y_;
  std::vector<T> y_scratch_;
  std::shared_ptr<const DeviceCopy> device_;
  // C is only in device_ (from_device). Fetched by const readers: like the upper
  // triangle's fill, not safe for concurrent reads of one object.
  mutable bool host_missing_ = false;
  // Statistics with the sums and maxima of n inputs and count samples, no C yet; throws
  // on inconsistent shapes.
  static LayerStats with_sums(int64_t count, int64_t n, std::vector<double> sum_x,
                              std::vector<double> max_x, std::vector<double> sum_y,
                              std::vector<double> max_y);
  void materialize() const;  // downloads C from device_ when host_missing_
};

}  // namespace dalr
