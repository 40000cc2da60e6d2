// dalr-gpu command line: a thin layer over the library. Errors from the library are
// caught here, printed as one line, and turned into the exit code (1: the job failed,
// 2: the command line is wrong).
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/processes.hpp"
#include "common/one_line.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "io/atomic_file.hpp"

namespace {

// Edit distance (insertions, deletions, substitutions) between a and b.
size_t distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// The verb within 3 edits of `word`, the closest; "" when none is.
std::string nearest(const std::string& word, const std::vector<std::string>& verbs) {
  std::string best;
  size_t best_d = 4;
  for (const auto& v : verbs) {
    const size_t d = distance(word, v);
    if (d < best_d) best = v, best_d = d;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  // Blocks of 1 MiB and more straight from the system and back to it when freed: glibc's
  // default raises that threshold as blocks are freed (up to 32 MiB), and then keeps the
  // solve's freed temporaries in the heap, so the process would hold more than the
  // compress job's memory model counts (memory_model.hpp) for the rest of the job.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  dalr::prepare_cpu_kernels(argv);  // may start this program again
  // SIGINT/SIGTERM/SIGHUP: remove the outputs' temporaries, exit 130/143/129.
  dalr::install_interrupt_cleanup("dalr-gpu");
  // mpirun -np N: every rank runs this program; MPI starts here (processes.hpp).
  std::unique_ptr<dalr::cli::Processes> procs;
  try {
    procs = std::make_unique<dalr::cli::Processes>(&argc, &argv);
  } catch (const dalr::Error& e) {
    std::cerr << "dalr-gpu: error: " << dalr::one_line(e.what()) << "\n";
    return 2;
  }
  // The verb may be omitted: `dalr-gpu --model ...` means `dalr-gpu compress --model ...`.
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() > 1 && args[1].size() > 1 && args[1][0] == '-' && args[1] != "-h" &&
      args[1] != "--help" && args[1] != "--version")
    args.insert(args.begin() + 1, "compress");

  // An unknown verb (`compres`): CLI11 would only say that a subcommand is required.
  const std::vector<std::string> verbs = {"compress", "evaluate", "sweep", "inspect"};
  if (args.size() > 1 && !args[1].empty() && args[1][0] != '-' &&
      std::find(verbs.begin(), verbs.end(), args[1]) == verbs.end()) {
    std::cerr << "dalr-gpu: error: unknown verb '" << args[1] << "'";
    const std::string near = nearest(args[1], verbs);
    if (!near.empty()) std::cerr << "; did you mean '" << near << "'?";
    std::cerr << " (verbs: compress, evaluate, sweep, inspect)\n";
    return 2;
  }

  CLI::App app{
      "dalr-gpu: compress the fully connected layers of a trained network with the\n"
      "statistics of the target domain's activations (DALR, Masana et al., ICCV 2017).\n"
      "Run `dalr-gpu VERB --help` for the options of each verb."};
  app.set_version_flag("--version", std::string("dalr-gpu ") + dalr::cli::version());
  app.require_subcommand(1);
  dalr::cli::Commands cmds(app, procs->comm());

  std::vector<const char*> cargv;
  for (auto& a : args) cargv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cargv.size()), cargv.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  // With several ranks an error stops them all (abort_all) after this rank printed it:
  // the others may be waiting for this one's statistics.
  const int rank = procs->comm().rank(), size = procs->comm().size();
  const std::string who =
      size > 1 ? " (process " + std::to_string(rank) + " of " + std::to_string(size) + ")" : "";
  int code = 0;
  try {
    return cmds.run();
  } catch (const dalr::Error& e) {
    std::cerr << "dalr-gpu: error" << who << ": " << dalr::one_line(e.what()) << "\n";
    code = 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "dalr-gpu: error" << who
              << ": out of memory (try --precision fp32 or a smaller --batch)\n";
    code = 1;
  } catch (const std::exception& e) {
    std::cerr << "dalr-gpu: internal error" << who << ": " << e.what() << "\n";
    code = 3;
  }
  procs->abort_all(code);
  return code;
}
