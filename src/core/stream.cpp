#include "core/stream.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/checked.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::unique_ptr<BatchSource> open_data(const DataOptions& o, const InputSpec& in) {
  if (o.data.empty()) throw Error("--data DIR (an image folder) or --data FILE.npy is required");
  if (!std::filesystem::exists(o.data)) throw Error("--data: " + o.data + " does not exist");
  check_batch_and_workers(o.batch, o.workers);
  if (o.limit < 0) throw Error("--limit must be >= 0");
  if (std::filesystem::is_directory(o.data))
    return open_images(o.data, in, o.workers, o.limit, o.shuffle, o.seed,
                       /*skip_bad=*/true, o.classes, o.rank, o.ranks);
  return open_npy_images(o.data, o.limit, o.rank, o.ranks);
}

ModelClasses model_classes(const SafetensorsFile& file, const Arch& arch) {
  ModelClasses c;
  const std::vector<ActShape> shapes =
      layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  c.outputs = shapes.back().numel();
  const auto it = file.metadata().find("dalr.classes");
  if (it != file.metadata().end()) c.names = parse_class_names(it->second, c.outputs, file.path());
  return c;
}

Progress::Progress(std::string what, int64_t total, bool quiet)
    : what_(std::move(what)), total_(total), quiet_(quiet), tty_(isatty(2)), start_(now_s()) {}

void Progress::add(int64_t done) {
  done_ += done;
  const double t = now_s();
  if (quiet_ || t - last_ < (tty_ ? 0.2 : 5.0)) return;
  last_ = t;
  const double rate = done_ / std::max(t - start_, 1e-9);
  const double eta = rate > 0 ? (total_ - done_) / rate : 0;
  std::fprintf(stderr, "%s%s: %lld/%lld images, %.0f images/s, ETA %.0f s%s", tty_ ? "\r" : "",
               what_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), rate,
               eta, tty_ ? "" : "\n");
}

void Progress::finish() {
  if (quiet_) return;
  const double t = now_s() - start_;
  std::fprintf(stderr, "%s%s: %lld images in %.1f s (%.0f images/s)\n", tty_ ? "\r" : "",
               what_.c_str(), static_cast<long long>(done_), t, done_ / std::max(t, 1e-9));
}

namespace {

// The device path: the forward pass hands device blocks straight to the accumulators,
// so activations never visit the host. Only when every party supports it.
template <typename T>
bool on_device(const Forward<T>& fwd, const std::vector<StatsAccumulator<T>*>& accs) {
  if (!fwd.supports_device_taps()) return false;
  for (const StatsAccumulator<T>* a : accs)
    if (!a->supports_device_add()) return false;
  return true;
}

}  // namespace

template <typename T>
void stream_statistics(const Forward<T>& fwd, BatchSource& src,
                       const std::vector<std::string>& layers,
                       const std::vector<StatsAccumulator<T>*>& accs, const DataOptions& o) {
  const int64_t c = src.channels(), h = src.height(), w = src.width();
  HostBatch<T> in(src, o.batch);
  const bool device = on_device(fwd, accs);
  Progress progress("statistics", src.size(), o.quiet);
  int64_t first = src.first_index(), done = 0;  // the samples' numbers, as one process's
  for (int64_t got; (got = in.next(src, nullptr)) > 0; first += got, done += got) {
    if (device) {
      // Returns once the pass is queued: the next batch is decoded while the GPU works.
      fwd.run_taps_device(
          in.data(), got, c, h, w, layers,
          [&](const std::string& name, const T* x, int64_t n, int64_t batch, void* stream) {
            for (size_t i = 0; i < layers.size(); ++i)
              if (layers[i] == name) accs[i]->add_device(x, batch, n, first, stream);
          });
    } else {
      fwd.run_taps(in.data(), got, c, h, w, layers,
                   [&](const std::string& name, const T* x, int64_t n, int64_t batch) {
                     for (size_t i = 0; i < layers.size(); ++i)
                       if (layers[i] == name) accs[i]->add(x, batch, n, first);
                   });
    }
    progress.add(got);
  }
  progress.finish();
  if (done == 0 && src.skipped() > 0)
    throw Error("none of the " + std::to_string(src.size()) +
                " images could be read (first: " + src.first_skip_reason() + ")");
}

Error with_precision_hint(const Error& e, Precision precision) {
  const std::string msg = e.what();
  if (precision != Precision::Fp16 ||
      msg.find("the activations must be finite") == std::string::npos)
    return e;
  return Error(msg +
               "; with --precision fp16, activations above 65504 overflow to Inf (and Inf - Inf "
               "gives NaN): try --precision bf16, which has float's range");
}

template void stream_statistics(const Forward<float>&, BatchSource&,
                                const std::vector<std::string>&,
                                const std::vector<StatsAccumulator<float>*>&, const DataOptions&);
template void stream_statistics(const Forward<double>&, BatchSource&,
                                const std::vector<std::string>&,
                                const std::vector<StatsAccumulator<double>*>&, const DataOptions&);

}  // namespace dalr
