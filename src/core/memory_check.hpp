#pragma once
// The compress job's memory check: what the machine offers (host and device), the job's
// shape for the memory model (memory_model.hpp), and the refusal, before any data is read,
// of a job that cannot fit: the stage, the bytes needed and available, the largest terms,
// and the remedies that apply to this job, each with what it would need.
#include <string>

#include "core/memory_model.hpp"
#include "dalr/backend.hpp"
#include "dalr/compress.hpp"

namespace dalr {

// What the host offers this process, in bytes (0 where unknown).
struct HostMemory {
  double resident = 0;      // VmRSS: what the process holds now
  double peak = 0;          // VmHWM: the most it has held
  double available = 0;     // MemAvailable
  double cgroup_limit = 0;  // the cgroup's memory.max (v2) or memory.limit_in_bytes (v1)
};
HostMemory probe_host_memory();

// --memory-limit's SIZE: a number of bytes with an optional unit, K, M, G, T (powers of
// 1000) or Ki, Mi, Gi, Ti (powers of 1024), each with an optional B ("8G", "500MB",
// "1.5Gi", "123456"). Throws dalr::Error naming the text otherwise.
double parse_memory_size(const std::string& text);

// What a job may use: the host limit (the process's peak, in all) and the device's free
// bytes, and where they come from.
struct MemoryBudget {
  bool check = true;        // false: --memory-limit none
  double baseline = 0;      // the process's resident bytes now (the model's baseline)
  double host_limit = 0;    // 0: unknown (no check)
  std::string host_source;  // "--memory-limit", "MemAvailable", "the cgroup's memory.max"
  double device_free = 0;   // 0: no device, or unknown
};
// From --memory-limit (CompressOptions::memory_limit) or the machine, and the backend's
// device (Backend::available_device_bytes).
MemoryBudget memory_budget(const CompressOptions& o, Backend& backend);

namespace compress_job {

struct Plan;

// The memory model's view of the plan (its layers' paths as the plan chose them).
MemoryShape memory_shape(const Plan& p);
// Estimates the plan's memory into p.memory; throws dalr::Error when it does not fit the
// budget (unless the check is off), naming the stage, the numbers, the largest terms and
// the remedies that apply.
void check_memory(Plan& p);
// The report's "memory": the estimate, the budget, and the peak measured so far.
nlohmann::json memory_report(const Plan& p);

}  // namespace compress_job
}  // namespace dalr
