// dalr-gpu built without MPI (processes.hpp): one process; refused under mpirun -np N > 1.
#include <cstdlib>
#include <string>

#include "cli/processes.hpp"
#include "dalr/error.hpp"

namespace dalr::cli {

struct Processes::Impl {
  SingleProcess single;
};

namespace {

// The number of ranks mpirun (OpenMPI, or a PMI launcher such as MPICH's) says this
// process is one of; 1 when no launcher started it.
int launcher_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(var)) return std::atoi(v) > 0 ? std::atoi(v) : 1;
  return 1;
}

}  // namespace

Processes::Processes(int*, char***) : impl_(std::make_unique<Impl>()) {
  const int size = launcher_size();
  if (size > 1)
    throw Error("started as one of " + std::to_string(size) +
                " processes (mpirun), but this dalr-gpu was built without MPI: each would run "
                "the whole job; install an MPI (Debian: libopenmpi-dev) and rebuild, or run "
                "one process");
}

Processes::~Processes() = default;

Communicator& Processes::comm() {
  return impl_->single;
}

void Processes::abort_all(int) {}

}  // namespace dalr::cli
