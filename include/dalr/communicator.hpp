#pragma once
// The processes of one job (`mpirun -np N dalr-gpu compress ...`): each rank accumulates
// the statistics of its share of the samples, and the shares' statistics are combined on
// rank 0, which solves and writes. The library sees only this interface, so it needs no
// MPI: the command line supplies an MPI implementation when it was built with MPI and
// started by mpirun, and the single process otherwise.
#include <cstdint>

namespace dalr {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;  // 0 .. size() - 1; rank 0 solves, writes and reports
  virtual int size() const = 0;
  // Element-wise sums (maxima) of v over all ranks into rank 0's v; the other ranks' v
  // are left unspecified. Every rank calls with the same len (any size: split into calls
  // under 2^31 elements).
  virtual void sum_to_root(double* v, int64_t len) = 0;
  virtual void sum_to_root(float* v, int64_t len) = 0;
  virtual void sum_to_root(int64_t* v, int64_t len) = 0;
  virtual void max_to_root(double* v, int64_t len) = 0;
  // The same sums for v in the memory of CUDA device `device` (between GPUs: NCCL), if
  // every rank can. Every rank calls it; one that cannot (its C is on the host) passes
  // v = nullptr. Returns false on every rank, having summed nothing, when any cannot or
  // the build has no NCCL; the caller then sums on the host.
  virtual bool sum_to_root_device(float* /*v*/, int64_t /*len*/, int /*device*/) { return false; }
  virtual bool sum_to_root_device(double* /*v*/, int64_t /*len*/, int /*device*/) { return false; }
};

// One process: its values are already the totals.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sum_to_root(double*, int64_t) override {}
  void sum_to_root(float*, int64_t) override {}
  void sum_to_root(int64_t*, int64_t) override {}
  void max_to_root(double*, int64_t) override {}
};

// The share of rank r of `size` ranks in `count` items, [first, last): contiguous, in
// order, sizes differing by at most one (a rank's share may be empty when count < size).
struct Share {
  int64_t first = 0, last = 0;
};
inline Share share_of(int64_t count, int rank, int size) {
  // count * rank overflows only beyond 2^63 / size items.
  return {count * rank / size, count * (rank + 1) / size};
}

}  // namespace dalr
