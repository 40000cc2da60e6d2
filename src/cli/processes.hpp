#pragma once
// The processes of this run: MPI's world when dalr-gpu was built with MPI and started by
// mpirun (its environment says so), else the single process. processes_mpi.cpp is
// compiled when CMake finds MPI, processes_single.cpp otherwise; the library sees only
// dalr::Communicator.
#include <memory>

#include "dalr/communicator.hpp"

namespace dalr::cli {

class Processes {
 public:
  // Starts MPI when mpirun started this process. Throws dalr::Error when mpirun started
  // several ranks of a dalr-gpu built without MPI: each would run the whole job.
  Processes(int* argc, char*** argv);
  ~Processes();  // MPI_Finalize when MPI was started
  Processes(const Processes&) = delete;
  Processes& operator=(const Processes&) = delete;

  Communicator& comm();
  // After this rank printed its error: with several ranks, stops them all (MPI_Abort) so
  // that none waits forever for this one; returns when there is one.
  void abort_all(int code);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dalr::cli
