// The compress job (dalr/compress.hpp): the plan, then the stages over the layers
// (compress_plan.hpp).
#include "dalr/compress.hpp"

#include "core/compress_plan.hpp"
#include "core/job_common.hpp"
#include "dalr/backend.hpp"
#include "dalr/communicator.hpp"

namespace dalr {

namespace {

using namespace compress_job;

template <typename T>
CompressResult run(const Plan& p, Backend& backend) {
  const auto t_all = Clock::now();
  JobOutput out;
  auto t0 = Clock::now();
  std::vector<LayerJob<T>> jobs = load_layers<T>(p);
  out.timing["load_model"] = seconds_since(t0);
  StageRates rates(backend);
  if (p.sequential) {  // one process (the plan): a pass, its solves, then the next pass
    if (p.mode == RankMode::Budget) budget_ranks_first(p, jobs, backend, out, rates);
    compress_sequentially(p, jobs, backend, out, rates);
  } else {
    collect_statistics(p, jobs, backend, out);
    if (p.o.comm && p.o.comm->rank() != 0) {  // rank 0 holds the totals
      CompressResult mine;
      mine.warnings = out.warnings;  // what only this rank saw (images it skipped)
      return mine;
    }
    choose_ranks(p, jobs, backend, out, rates);
    solve_layers(p, jobs, backend, out, rates);
  }
  out.timing["solve"] = out.solve_s;
  out.timing["error"] = out.error_s;
  write_model(p, jobs, out);
  out.timing["total"] = seconds_since(t_all);
  CompressResult res = make_report(p, jobs, backend, out);
  commit_all(out.staged);  // the model and the report, once both are written
  return res;
}

}  // namespace

CompressResult compress(const CompressOptions& opt, Backend& backend) {
  const bool on_cpu = backend.name().rfind("cpu", 0) == 0;
  // Before any data is read: every option, and whether the job fits the memory.
  const Plan plan = make_plan(opt, backend.precision(), on_cpu, memory_budget(opt, backend));
  return with_precision(plan.precision,
                        [&](auto tag) { return run<decltype(tag)>(plan, backend); });
}

}  // namespace dalr
