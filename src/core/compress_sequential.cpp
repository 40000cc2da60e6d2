// Sequential compression (compress_plan.hpp, Plan::sequential): the conv layers one after
// another in network order, each from a pass of the network whose earlier given layers are
// already replaced by their factors (Zhang et al., "Accelerating very deep convolutional
// networks", 2015), so that a layer is fitted to the inputs it will see in the compressed
// network; then the fc layers together, in one pass through every compressed conv layer.
// Asymmetric (Plan::asymmetric, the default for dalr and dalr-exact; dalr/asymmetric.hpp):
// a pass through a compressed upstream streams the original network too, and the layer
// is fitted to the ORIGINAL outputs W X from its inputs X^ in the compressed network.
// Symmetric: the ordinary solve on X^ alone. svd and svd-bc use no data for A and B.
//
// The network of a pass is the model as write_model would write it with the layers solved
// so far, written to a temporary file beside --out and mapped: every backend's forward pass
// reads it as it reads a compressed model (no second way of loading weights), and it runs
// the float32 factors the final file holds. The file is unlinked as soon as it is mapped
// (the mapping keeps it readable), and an interrupt removes it like any temporary output.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "common/split_list.hpp"
#include "core/compress_plan.hpp"
#include "dalr/safetensors.hpp"
#include "io/atomic_file.hpp"

namespace dalr::compress_job {

namespace {

// Where the pass's model is written: --out's folder, unless --out is a device or a FIFO
// (written through, not replaced), then the system's temporary folder.
std::string scratch_target(const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  const bool through =
      !ec && (fs::is_character_file(st) || fs::is_fifo(st) || fs::is_block_file(st));
  return through ? (fs::temp_directory_path() / "dalr-sequential.safetensors").string() : out;
}

// The network with `done` replaced by their factors, mapped from an unlinked file.
template <typename T>
class CompressedUpstream {
 public:
  CompressedUpstream(const Plan& p, const std::vector<const LayerJob<T>*>& done, JobOutput& out) {
    json rep;  // --next-layer's entry: pruning does not run here (the plan)
    arch_ = factored_arch(p, done, out.warnings);
    std::map<std::string, std::string> meta = p.model->metadata();
    for (const auto& [k, v] : arch_metadata(arch_)) meta[k] = v;
    std::unique_ptr<AtomicFile> f =
        stage_safetensors(scratch_target(p.o.out), factored_tensors(p, done, rep), meta);
    if (f->temporary().empty()) throw Error("internal: the sequential pass's model has no file");
    model_ = std::make_unique<SafetensorsFile>(f->temporary());
  }  // f removes the file; model_ keeps its mapping
  Network network() const { return {model_.get(), &arch_}; }

 private:
  Arch arch_;
  std::unique_ptr<SafetensorsFile> model_;
};

// The passes: each conv layer alone in network order, then the fc layers together.
std::vector<std::vector<size_t>> passes(const Plan& p) {
  std::vector<size_t> convs, fcs;
  for (size_t i = 0; i < p.layers.size(); ++i) (p.layers[i].conv ? convs : fcs).push_back(i);
  std::sort(convs.begin(), convs.end(),
            [&](size_t a, size_t b) { return p.layers[a].arch_index < p.layers[b].arch_index; });
  std::vector<std::vector<size_t>> out;
  for (size_t i : convs) out.push_back({i});
  if (!fcs.empty()) out.push_back(fcs);
  return out;
}

}  // namespace

template <typename T>
void compress_sequentially(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                           JobOutput& out, StageRates& rates) {
  const std::vector<std::vector<size_t>> groups = passes(p);
  std::vector<const LayerJob<T>*> done;
  std::vector<std::string> done_names, done_ranks;  // done_ranks: "features.3 (rank 8)"
  double statistics_s = 0;
  json report = json::array();
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<std::string> names;
    for (size_t i : groups[g]) names.push_back(jobs[i].name);
    if (!p.o.quiet)
      std::fprintf(
          stderr, "pass %zu of %zu: %s, through %s\n", g + 1, groups.size(),
          join_list(names, ", ").c_str(),
          done.empty()
              ? "the original network"
              : ("the network with " + join_list(done_ranks, ", ") + " compressed").c_str());
    std::unique_ptr<CompressedUpstream<T>> up;
    if (!done.empty()) up = std::make_unique<CompressedUpstream<T>>(p, done, out);
    // The pass's jobs in a vector of their own for the stages, then back in place.
    std::vector<LayerJob<T>> pass;
    for (size_t i : groups[g]) {
      pass.push_back(std::move(jobs[i]));
      pass.back().upstream = done_names;
    }
    const bool asymmetric = up && p.asymmetric;
    if (asymmetric) {
      collect_asymmetric_statistics(p, pass, backend, out, up->network());
    } else if (up) {
      const Network net = up->network();
      collect_statistics(p, pass, backend, out, &net);
    } else {
      collect_statistics(p, pass, backend, out);
    }
    statistics_s += out.timing["statistics"].get<double>();
    choose_ranks(p, pass, backend, out, rates);
    solve_layers(p, pass, backend, out, rates);
    for (size_t q = 0; q < pass.size(); ++q) jobs[groups[g][q]] = std::move(pass[q]);
    report.push_back({{"layers", names},
                      {"through_compressed", done_names},
                      {"fit", asymmetric ? "asymmetric" : "symmetric"}});
    for (size_t i : groups[g]) {
      done.push_back(&jobs[i]);
      done_names.push_back(jobs[i].name);
      done_ranks.push_back(jobs[i].name + " (rank " + std::to_string(jobs[i].rank) + ")");
    }
  }
  out.timing["statistics"] = statistics_s;
  out.rep["sequential"] = {{"mode", p.asymmetric ? "asymmetric" : "symmetric"}, {"passes", report}};
}

template void compress_sequentially(const Plan&, std::vector<LayerJob<float>>&, Backend&,
                                    JobOutput&, StageRates&);
template void compress_sequentially(const Plan&, std::vector<LayerJob<double>>&, Backend&,
                                    JobOutput&, StageRates&);

}  // namespace dalr::compress_job
