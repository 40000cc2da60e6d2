// dalr-gpu built with MPI (processes.hpp): the ranks started by mpirun, combined with
// MPI_Reduce. Only the statistics travel (C, sums, maxima, count), once per layer.
#include <mpi.h>

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
