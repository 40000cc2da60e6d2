#pragma once
// The sweep's files: PREFIX.csv, PREFIX.md, PREFIX.json (every point with all its
// numbers), PREFIX.svg (accuracy versus kept parameters) and PREFIX-spectrum.svg
// (spectral energy kept versus rank), each written atomically.
#include <string>
#include <vector>

#include "dalr/sweep.hpp"

namespace dalr {

std::vector<std::string> sweep_output_paths(const std::string& prefix);
void write_sweep_files(const SweepOptions& o, const SweepResult& r);

// The SVG texts (hand-written, no library), exposed for the tests.
std::string sweep_accuracy_svg(const SweepOptions& o, const SweepResult& r);
std::string sweep_spectrum_svg(const SweepOptions& o, const SweepResult& r);

}  // namespace dalr
