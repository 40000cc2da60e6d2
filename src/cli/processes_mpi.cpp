// dalr-gpu built with MPI (processes.hpp): the ranks started by mpirun, combined with
// MPI_Reduce. Only the statistics travel (C, sums, maxima, count), once per layer.
#include <mpi.h>
#ifdef DALR_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cli/processes.hpp"
#include "dalr/error.hpp"

namespace dalr::cli {

namespace {

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void sum_to_root(double* v, int64_t len) override { reduce(v, len, MPI_DOUBLE, MPI_SUM); }
  void sum_to_root(float* v, int64_t len) override { reduce(v, len, MPI_FLOAT, MPI_SUM); }
  void sum_to_root(int64_t* v, int64_t len) override { reduce(v, len, MPI_INT64_T, MPI_SUM); }
  void max_to_root(double* v, int64_t len) override { reduce(v, len, MPI_DOUBLE, MPI_MAX); }
#ifdef DALR_HAVE_NCCL
  bool sum_to_root_device(float* v, int64_t len, int device) override {
    return reduce_device(v, len, ncclFloat, device);
  }
  bool sum_to_root_device(double* v, int64_t len, int device) override {
    return reduce_device(v, len, ncclDouble, device);
  }
  ~MpiWorld() override {
    if (nccl_) ncclCommDestroy(nccl_);
  }
#endif

 private:
  int rank_ = 0, size_ = 1;

  // MPI counts are int: an n x n C passes 2^31 elements from n = 46341 on, so it goes in
  // chunks of 2^30.
  template <typename V>
  void reduce(V* v, int64_t len, MPI_Datatype type, MPI_Op op) {
    constexpr int64_t kChunk = int64_t(1) << 30;
    for (int64_t at = 0; at < len; at += kChunk) {
      const int count = static_cast<int>(std::min(kChunk, len - at));
      const int rc = rank_ == 0
                         ? MPI_Reduce(MPI_IN_PLACE, v + at, count, type, op, 0, MPI_COMM_WORLD)
                         : MPI_Reduce(v + at, nullptr, count, type, op, 0, MPI_COMM_WORLD);
      if (rc != MPI_SUCCESS)
        throw Error("combining the statistics of the processes failed (MPI_Reduce: error " +
                    std::to_string(rc) + ")");
    }
  }

#ifdef DALR_HAVE_NCCL
  ncclComm_t nccl_ = nullptr;
  int nccl_device_ = -1;

  // Between the GPUs, bootstrapped through MPI (rank 0's ncclUniqueId broadcast); only
  // when every rank's C is on a device (an agreement first, so that no rank waits in
  // NCCL for one that went to MPI_Reduce).
  bool reduce_device(void* v, int64_t len, ncclDataType_t type, int device) {
    int all = v != nullptr && device >= 0 ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) return false;
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    check(cudaSetDevice(device), "cudaSetDevice");
    if (!nccl_ || nccl_device_ != device) {
      if (nccl_) ncclCommDestroy(nccl_);
      nccl_ = nullptr;
      ncclUniqueId id;
      if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
      check_nccl(ncclCommInitRank(&nccl_, size_, id, rank_), "ncclCommInitRank");
      nccl_device_ = device;
    }
    // In place on the default stream, which the statistics' work has finished with
    // (their C was synchronised into the DeviceGram).
    check_nccl(ncclReduce(v, v, static_cast<size_t>(len), type, ncclSum, 0, nccl_, nullptr),
               "ncclReduce");
    check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");
    if (previous >= 0 && previous != device) cudaSetDevice(previous);
    return true;
  }
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess)
      throw Error(std::string("combining the statistics on the GPUs: ") + what + ": " +
                  cudaGetErrorString(e));
  }
  static void check_nccl(ncclResult_t r, const char* what) {
    if (r != ncclSuccess)
      throw Error(std::string("combining the statistics on the GPUs: ") + what + ": " +
                  ncclGetErrorString(r));
  }
#endif
};

}  // namespace

struct Processes::Impl {
  bool started = false;
  SingleProcess single;
  std::unique_ptr<MpiWorld> world;
};

// MPI starts only under a launcher: a plain `dalr-gpu ...` neither pays MPI's start-up
// nor depends on it working on the machine.
Processes::Processes(int* argc, char*** argv) : impl_(std::make_unique<Impl>()) {
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMI_SIZE") && !std::getenv("PMIX_RANK"))
    return;
  if (MPI_Init(argc, argv) != MPI_SUCCESS) throw Error("MPI_Init failed under mpirun");
  impl_->started = true;
  impl_->world = std::make_unique<MpiWorld>();
}

Processes::~Processes() {
  if (impl_->started) MPI_Finalize();
}

Communicator& Processes::comm() {
  if (impl_->world) return *impl_->world;
  return impl_->single;
}

void Processes::abort_all(int code) {
  if (!impl_->world || impl_->world->size() == 1) return;
  std::cerr.flush();
  MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace dalr::cli
