// dalr-gpu command line: a thin layer over the library. Errors from the library are
// caught here, printed as one line, and turned into the exit code (1: the job failed,
// 2: the command line is wrong).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "io/atomic_file.hpp"

int main(int argc, char** argv) {
  dalr::prepare_cpu_kernels(argv);  // may start this program again
  // SIGINT/SIGTERM/SIGHUP: remove the outputs' temporaries, exit 130/143/129.
  dalr::install_interrupt_cleanup("dalr-gpu");
  // The verb may be omitted: `dalr-gpu --model ...` means `dalr-gpu compress --model ...`.
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() > 1 && args[1].size() > 1 && args[1][0] == '-' && args[1] != "-h" &&
      args[1] != "--help" && args[1] != "--version")
    args.insert(args.begin() + 1, "compress");

  CLI::App app{
      "dalr-gpu: compress the fully connected layers of a trained network with the\n"
      "statistics of the target domain's activations (DALR, Masana et al., ICCV 2017).\n"
      "Run `dalr-gpu VERB --help` for the options of each verb."};
  app.set_version_flag("--version", std::string("dalr-gpu ") + dalr::cli::version());
  app.require_subcommand(1);
  dalr::cli::Commands cmds(app);

  std::vector<const char*> cargv;
  for (auto& a : args) cargv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cargv.size()), cargv.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return cmds.run();
  } catch (const dalr::Error& e) {
    std::cerr << "dalr-gpu: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "dalr-gpu: error: out of memory (try --precision fp32 or a smaller --batch)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "dalr-gpu: internal error: " << e.what() << "\n";
    return 3;
  }
}
