// Forward-pass speed of a compressed network against the original: (a) the whole
// network, images/s and speed-up at a batch size; (b) each factorised layer alone
// against its NAME.0 / NAME.1 pair alone, on random input of the layer's shape, with
// multiply-adds before and after and the achieved GFLOP/s (2 FLOPs per multiply-add).
//   bench_forward [--model FILE | --arch vgg19 --size S]
//                 (--compressed FILE | --factor NAME:K[,NAME:K...] [--round-rank R])
//                 [--device cpu|cuda --precision fp32 --batch 8 --repeats 3 --json out.json]
// --factor synthesises the compressed model with random factors of rank K (the time does
// not depend on their values); K may be "half", the rank at which the layer's
// multiply-adds halve. Each timed pass runs from the tapped input of the first layer to
// that of a probe layer appended after the last (forward_plan.hpp), so it times the
// layers only: wall clock on the CPU, device events on the GPU. On the GPU the whole
// network is also timed end to end (run(): upload, layers, download). Original and
// compressed passes alternate within each repeat; the medians are reported.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.hpp"
#include "bench_model.hpp"
#include "cpu/dnnl_conv.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "forward_plan.hpp"
#ifdef DALR_HAVE_CUDA
#include "cuda/device_buffer.hpp"
#endif

using json = nlohmann::json;
namespace db = dalr::bench;

namespace {

struct Args {
  std::string model, arch = "vgg19", compressed, factor, device, precision = "fp32", json;
  int64_t size = 0, batch = 8, repeats = 3, round_rank = 0;
  bool no_layers = false;
};

// A network ready to time: its arch (probe appended) and the file holding its tensors.
struct Net {
  dalr::Arch arch;  // without the probe
  dalr::Arch probed;
  std::unique_ptr<dalr::SafetensorsFile> file;
  std::unique_ptr<dalr::Forward<float>> fwd;
};

std::vector<dalr::TensorOut> layer_tensors(const dalr::SafetensorsFile& f,
                                           const dalr::LayerSpec& l) {
  std::vector<dalr::TensorOut> out{dalr::TensorOut::borrow(f, f.at(l.name + ".weight"))};
  if (l.bias) out.push_back(dalr::TensorOut::borrow(f, f.at(l.name + ".bias")));
  return out;
}

// Writes `tensors` and the probe's weight to `path`, opens it and makes the forward pass.
void finish_net(Net& n, std::vector<dalr::TensorOut> tensors, const std::string& path,
                dalr::Backend& backend) {
  dalr::TensorOut probe;
  n.probed = db::with_probe(n.arch, &probe);
  tensors.push_back(probe);
  dalr::write_safetensors(path, tensors, {});
  tensors.clear();
  n.file = std::make_unique<dalr::SafetensorsFile>(path);
  n.fwd = backend.forward_f32(n.probed, *n.file);
}

// CPU time of this process (all its threads), in seconds.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One pass from the input of `first` to the probe's. On the host {wall, CPU} seconds
// between the two taps (the CPU time, with one thread, is immune to the time-sharing of a
// busy machine); on the GPU {device seconds} between events recorded on the compute
// stream at the two device taps.
std::vector<double> pass_times(const dalr::Forward<float>& f, const std::vector<float>& x,
                               int64_t batch, const std::string& first) {
  const dalr::InputSpec& in = f.arch().input;
  const std::vector<std::string> taps = {first, db::kProbe};
  if (f.supports_device_taps()) {
#ifdef DALR_HAVE_CUDA
    dalr::cuda::Event start, stop;
    f.run_taps_device(x.data(), batch, in.channels, in.crop[0], in.crop[1], taps,
                      [&](const std::string& name, const float*, int64_t, int64_t, void* s) {
                        (name == first ? start : stop).record(static_cast<cudaStream_t>(s));
                      });
    stop.synchronize();
    return {stop.elapsed_ms_since(start) / 1e3};
#endif
  }
  std::chrono::steady_clock::time_point t0, t1;
  double c0 = 0, c1 = 0;
  f.run_taps(x.data(), batch, in.channels, in.crop[0], in.crop[1], taps,
             [&](const std::string& name, const float*, int64_t, int64_t) {
               (name == first ? t0 : t1) = std::chrono::steady_clock::now();
               (name == first ? c0 : c1) = process_cpu_seconds();
             });
  return {std::chrono::duration<double>(t1 - t0).count(), c1 - c0};
}

// Original and compressed passes, interleaved: per side the medians {seconds[, CPU seconds]}.
std::vector<std::vector<double>> time_both(const Args& a, const Net& o, const Net& c,
                                           const std::vector<float>& x, const std::string& first_o,
                                           const std::string& first_c) {
  return db::interleaved_medians(a.repeats,
                                 {[&] { return pass_times(*o.fwd, x, a.batch, first_o); },
                                  [&] { return pass_times(*c.fwd, x, a.batch, first_c); }});
}

std::vector<float> random_input(int64_t count, bool relu, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(count));
  for (auto& v : x) v = relu ? std::abs(nd(rng)) : nd(rng);  // post-ReLU: no zeros, no denormals
  return x;
}

// {seconds, images/s, GFLOP/s} of a pass over `batch` images of `macs` multiply-adds each.
json rate(double seconds, int64_t batch, int64_t macs) {
  return {{"seconds", seconds},
          {"images_per_s", batch / seconds},
          {"gflop_per_s", 2.0 * static_cast<double>(macs) * batch / seconds / 1e9}};
}

// Output of both networks on one batch: same shape, finite; their relative difference.
json compare_outputs(const Net& o, const Net& c, const std::vector<float>& x, int64_t batch) {
  const auto& in = o.arch.input;
  // Up to the probe's input: the network's output.
  const auto a = o.fwd->run(x.data(), batch, in.channels, in.crop[0], in.crop[1], db::kProbe);
  const auto b = c.fwd->run(x.data(), batch, in.channels, in.crop[0], in.crop[1], db::kProbe);
  if (a.rows != b.rows || a.cols != b.cols)
    throw dalr::Error("the compressed network's output is " + std::to_string(b.rows) + " x " +
                      std::to_string(b.cols) + ", the original's " + std::to_string(a.rows) +
                      " x " + std::to_string(a.cols));
  double diff = 0, norm = 0;
  bool finite = true;
  for (size_t i = 0; i < a.data.size(); ++i) {
    finite = finite && std::isfinite(a.data[i]) && std::isfinite(b.data[i]);
    diff += (double(a.data[i]) - b.data[i]) * (double(a.data[i]) - b.data[i]);
    norm += double(a.data[i]) * a.data[i];
  }
  return {{"rows", b.rows},
          {"cols", b.cols},
          {"finite", finite},
          {"rel_diff", norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff)}};
}

json time_network(const Args& a, const Net& o, const Net& c) {
  const auto& in = o.arch.input;
  const int64_t count = a.batch * in.channels * in.crop[0] * in.crop[1];
  const std::vector<float> x = random_input(count, false, 11);
  json r;
  r["output"] = compare_outputs(o, c, x, a.batch);
  const auto t = time_both(a, o, c, x, db::first_named(o.arch), db::first_named(c.arch));
  const int64_t macs_o = db::arch_macs(o.arch), macs_c = db::arch_macs(c.arch);
  r["original"] = rate(t[0][0], a.batch, macs_o);
  r["compressed"] = rate(t[1][0], a.batch, macs_c);
  r["original"]["macs_per_image"] = macs_o;
  r["compressed"]["macs_per_image"] = macs_c;
  r["macs_kept"] = static_cast<double>(macs_c) / macs_o;
  r["speedup"] = t[0][0] / t[1][0];
  if (t[0].size() > 1) {
    r["original"]["cpu_seconds"] = t[0][1];
    r["compressed"]["cpu_seconds"] = t[1][1];
    r["cpu_speedup"] = t[0][1] / t[1][1];
  }
  if (o.fwd->supports_device_taps()) {  // the GPU: also upload and download, as run() does
    const auto wall = [&](const Net& n) {
      const auto t0 = std::chrono::steady_clock::now();
      n.fwd->run(x.data(), a.batch, in.channels, in.crop[0], in.crop[1], db::kProbe);
      return std::vector<double>{
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    };
    const auto e =
        db::interleaved_medians(a.repeats, {[&] { return wall(o); }, [&] { return wall(c); }});
    r["end_to_end"] = {{"original", rate(e[0][0], a.batch, macs_o)},
                       {"compressed", rate(e[1][0], a.batch, macs_c)},
                       {"speedup", e[0][0] / e[1][0]}};
  }
  return r;
}

// `layers` of `from` (with their tensors in from's file) alone, on input of shape s.
void small_net(const Net& from, const std::vector<size_t>& layers, const dalr::ActShape& s, Net& n,
               dalr::Backend& backend, const std::string& path) {
  std::vector<dalr::LayerSpec> specs;
  std::vector<dalr::TensorOut> tensors;
  for (size_t i : layers) {
    specs.push_back(from.arch.layers[i]);
    for (auto& t : layer_tensors(*from.file, from.arch.layers[i])) tensors.push_back(t);
  }
  n.arch = db::single_arch(specs, s);
  finish_net(n, std::move(tensors), path, backend);
}

// {seconds, gflop_per_s[, cpu_seconds]} of one timed side.
json side(const std::vector<double>& t, int64_t macs, int64_t batch) {
  json r = {{"seconds", t[0]}, {"gflop_per_s", 2.0 * macs * batch / t[0] / 1e9}};
  if (t.size() > 1) r["cpu_seconds"] = t[1];
  return r;
}

// One factorised layer alone against its pair alone, each in a small arch of its own; and
// each part of the pair alone (NAME.1, the 1 x 1 conv, on random input of its shape), to
// show where the pair's time goes.
json time_layer(const Args& a, const Net& o, const Net& c, const db::LayerPair& p,
                dalr::Backend& backend, const db::TempDir& tmp) {
  const auto& in = o.arch.input;
  const auto shapes = dalr::layer_input_shapes(o.arch, in.channels, in.crop[0], in.crop[1]);
  const auto cshapes = dalr::layer_input_shapes(c.arch, in.channels, in.crop[0], in.crop[1]);
  const dalr::ActShape& s = shapes[p.original];
  const dalr::ActShape& s1 = cshapes[p.replaced[1]];
  const auto path = [&](const char* name) { return (tmp.path / name).string(); };
  Net lo, lc, l0, l1;
  small_net(o, {p.original}, s, lo, backend, path("layer.safetensors"));
  small_net(c, p.replaced, s, lc, backend, path("pair.safetensors"));
  small_net(c, {p.replaced[0]}, s, l0, backend, path("part0.safetensors"));
  small_net(c, {p.replaced[1]}, s1, l1, backend, path("part1.safetensors"));

  const std::vector<float> x = random_input(a.batch * s.numel(), true, 13);
  const std::vector<float> x1 = random_input(a.batch * s1.numel(), true, 17);
  const json out = compare_outputs(lo, lc, x, a.batch);
  const std::string& name = p.layer;
  const std::string &name0 = c.arch.layers[p.replaced[0]].name,
                    &name1 = c.arch.layers[p.replaced[1]].name;
  const auto t =
      db::interleaved_medians(a.repeats, {[&] { return pass_times(*lo.fwd, x, a.batch, name); },
                                          [&] { return pass_times(*lc.fwd, x, a.batch, name0); },
                                          [&] { return pass_times(*l0.fwd, x, a.batch, name0); },
                                          [&] { return pass_times(*l1.fwd, x1, a.batch, name1); }});
  const int64_t macs_o = db::arch_macs(lo.arch), macs_c = db::arch_macs(lc.arch);
  const int64_t macs_0 = db::arch_macs(l0.arch), macs_1 = db::arch_macs(l1.arch);
  json r = {{"layer", p.layer},
            {"type", dalr::layer_type_name(o.arch.layers[p.original].type)},
            {"k", p.rank},
            {"input", {s.c, s.h, s.w}},
            {"output", out},
            {"macs_per_image_before", macs_o},
            {"macs_per_image_after", macs_c},
            {"macs_kept", static_cast<double>(macs_c) / macs_o},
            {"seconds_before", t[0][0]},
            {"seconds_after", t[1][0]},
            {"gflop_per_s_before", 2.0 * macs_o * a.batch / t[0][0] / 1e9},
            {"gflop_per_s_after", 2.0 * macs_c * a.batch / t[1][0] / 1e9},
            {"speedup", t[0][0] / t[1][0]}};
  json part0 = side(t[2], macs_0, a.batch), part1 = side(t[3], macs_1, a.batch);
  part0.update({{"layer", name0}, {"macs_per_image", macs_0}});
  part1.update({{"layer", name1}, {"macs_per_image", macs_1}});
  r["parts"] = json::array({part0, part1});
  if (t[0].size() > 1) {
    r["cpu_seconds_before"] = t[0][1];
    r["cpu_seconds_after"] = t[1][1];
    r["cpu_speedup"] = t[0][1] / t[1][1];
  }
  return r;
}

std::string read_first_line(const std::string& path, const std::string& prefix = "") {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  return "";
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// Where and how it ran: CPU model, threads, OpenBLAS kernels, the CPU convolution path.
json machine(const std::string& device) {
  std::string cpu = read_first_line("/proc/cpuinfo", "model name\t: ");
  json m = {{"cpu", cpu},
            {"hardware_threads", std::thread::hardware_concurrency()},
            {"omp_num_threads", env_or("OMP_NUM_THREADS", "unset")},
            {"openblas_coretype", env_or("OPENBLAS_CORETYPE", "unset")},
            {"openblas_kernels", dalr::cpu_kernel_family()},
            {"load_average_start", read_first_line("/proc/loadavg")}};
  if (device == "cpu") m["cpu_conv"] = dalr::cpu::DnnlConv::create() ? "dnnl" : "im2col";
  return m;
}

void print_table(const json& r) {
  const auto& n = r["network"];
  std::printf("bench_forward: %s, %s, %s, input %s, batch %lld, median of %lld\n",
              r["device"].get<std::string>().c_str(), r["precision"].get<std::string>().c_str(),
              r["model"].get<std::string>().c_str(), r["input"].dump().c_str(),
              static_cast<long long>(r["batch"].get<int64_t>()),
              static_cast<long long>(r["repeats"].get<int64_t>()));
  std::printf(
      "network: %.4g -> %.4g GMAC/image (%.1f%%), %.1f -> %.1f ms/batch, %.2f -> %.2f "
      "images/s, speed-up %.2fx; outputs %lld x %lld, relative difference %.3g\n",
      n["original"]["macs_per_image"].get<double>() / 1e9,
      n["compressed"]["macs_per_image"].get<double>() / 1e9, 100 * n["macs_kept"].get<double>(),
      1e3 * n["original"]["seconds"].get<double>(), 1e3 * n["compressed"]["seconds"].get<double>(),
      n["original"]["images_per_s"].get<double>(), n["compressed"]["images_per_s"].get<double>(),
      n["speedup"].get<double>(), static_cast<long long>(n["output"]["rows"].get<int64_t>()),
      static_cast<long long>(n["output"]["cols"].get<int64_t>()),
      n["output"]["rel_diff"].get<double>());
  if (n.contains("cpu_speedup"))
    std::printf("network CPU time: %.1f -> %.1f ms/batch, speed-up %.2fx\n",
                1e3 * n["original"]["cpu_seconds"].get<double>(),
                1e3 * n["compressed"]["cpu_seconds"].get<double>(), n["cpu_speedup"].get<double>());
  if (n.contains("end_to_end"))
    std::printf(
        "network end to end (upload + layers + download): %.2f -> %.2f images/s, "
        "speed-up %.2fx\n",
        n["end_to_end"]["original"]["images_per_s"].get<double>(),
        n["end_to_end"]["compressed"]["images_per_s"].get<double>(),
        n["end_to_end"]["speedup"].get<double>());
  if (r["layers"].empty()) return;
  std::printf("%-16s %6s %12s %12s %10s %10s %8s %9s %9s %8s\n", "layer", "k", "MMAC before",
              "MMAC after", "ms before", "ms after", "speed-up", "GFLOP/s b", "GFLOP/s a",
              "CPU-time");
  for (const auto& l : r["layers"]) {
    std::printf(
        "%-16s %6lld %12.1f %12.1f %10.2f %10.2f %7.2fx %9.1f %9.1f",
        l["layer"].get<std::string>().c_str(), static_cast<long long>(l["k"].get<int64_t>()),
        l["macs_per_image_before"].get<double>() / 1e6,
        l["macs_per_image_after"].get<double>() / 1e6, 1e3 * l["seconds_before"].get<double>(),
        1e3 * l["seconds_after"].get<double>(), l["speedup"].get<double>(),
        l["gflop_per_s_before"].get<double>(), l["gflop_per_s_after"].get<double>());
    if (l.contains("cpu_speedup")) std::printf(" %7.2fx", l["cpu_speedup"].get<double>());
    std::printf("\n");
  }
}

// The original network: --model FILE, or the --arch preset with random He weights.
void make_original(const Args& a, Net& o, dalr::Backend& backend, const db::TempDir& tmp) {
  std::vector<dalr::TensorOut> tensors;
  std::unique_ptr<dalr::SafetensorsFile> src;
  if (!a.model.empty()) {
    src = std::make_unique<dalr::SafetensorsFile>(a.model);
    o.arch = dalr::load_arch(*src, a.arch);
    db::use_crop(o.arch, a.size);
    for (const auto& t : src->tensors()) tensors.push_back(dalr::TensorOut::borrow(*src, t));
  } else {
    o.arch = dalr::vgg_preset(a.arch, 1000, a.size > 0 ? a.size : 224);
    tensors = db::he_tensors(o.arch, 19);
  }
  finish_net(o, std::move(tensors), (tmp.path / "original.safetensors").string(), backend);
}

// The compressed network: --compressed FILE, or --factor's edit of the original with
// random factors (the original's biases).
void make_compressed(const Args& a, const Net& o, Net& c, dalr::Backend& backend,
                     const db::TempDir& tmp, json& r) {
  std::vector<dalr::TensorOut> tensors;
  std::unique_ptr<dalr::SafetensorsFile> src;
  if (!a.compressed.empty()) {
    src = std::make_unique<dalr::SafetensorsFile>(a.compressed);
    c.arch = dalr::load_arch(*src, a.arch);
    c.arch.input = o.arch.input;  // with --size, the same crop
    for (const auto& t : src->tensors()) tensors.push_back(dalr::TensorOut::borrow(*src, t));
  } else {
    const auto factors = db::parse_factors(o.arch, a.factor, a.round_rank);
    c.arch = db::factorised_arch(o.arch, factors);
    std::set<std::string> replaced;
    uint64_t seed = 23;
    for (const auto& f : factors) {
      const dalr::LayerSpec& l = o.arch.layers[db::layer_index(o.arch, f.layer)];
      replaced.insert({l.name + ".weight", l.name + ".bias"});
      const size_t i0 = db::layer_index(c.arch, f.layer + ".0");
      const std::vector<float> bias =
          l.bias ? o.file->read_f32(l.name + ".bias") : std::vector<float>{};
      for (auto& t :
           db::random_pair_tensors({c.arch.layers[i0], c.arch.layers[i0 + 1]}, bias, seed++))
        tensors.push_back(std::move(t));
      r["factor"].push_back({{"layer", f.layer}, {"requested", f.requested}, {"rank", f.rank}});
    }
    for (const auto& t : o.file->tensors())
      if (!replaced.count(t.name) && t.name != db::kProbe + ".weight")
        tensors.push_back(dalr::TensorOut::borrow(*o.file, t));
  }
  finish_net(c, std::move(tensors), (tmp.path / "compressed.safetensors").string(), backend);
}

}  // namespace

int main(int argc, char** argv) try {
  dalr::prepare_cpu_kernels(argv);  // may start this program again
  CLI::App app{
      "Forward-pass time of a compressed network against the original, whole and "
      "per factorised layer"};
  Args a;
  app.add_option("--model", a.model, "Original model file (default: --arch, random He weights)");
  app.add_option("--arch", a.arch, "VGG preset without --model, or for a file without dalr.arch")
      ->capture_default_str();
  app.add_option("--size", a.size, "Input crop size (0: the model's; 224 for a preset)")
      ->capture_default_str();
  app.add_option("--compressed", a.compressed, "Compressed model file (compress's output)");
  app.add_option("--factor", a.factor,
                 "NAME:K[,NAME:K...]: factorise these conv or linear layers at rank K (or "
                 "'half': where the layer's multiply-adds halve) with random factors");
  app.add_option("--round-rank", a.round_rank,
                 "With --factor: round each rank up to a multiple of R (8 or 16 suit tensor "
                 "cores), never past the maximum");
  app.add_option("--device", a.device, "cpu or cuda (default: cuda if present)");
  app.add_option("--precision", a.precision, "fp32 | tf32 (CUDA) | fp16 | bf16")
      ->capture_default_str();
  app.add_option("--batch", a.batch, "Images per pass")->capture_default_str();
  app.add_option("--repeats", a.repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_flag("--no-layers", a.no_layers, "Time the whole network only");
  app.add_option("--json", a.json, "Also write the JSON result to this file");
  CLI11_PARSE(app, argc, argv);
  if (a.compressed.empty() == a.factor.empty())
    throw dalr::Error("give either --compressed FILE or --factor NAME:K[,...]");
  if (!a.compressed.empty() && a.round_rank > 1)
    throw dalr::Error("--round-rank applies to --factor (a compressed file has its ranks)");
  if (a.batch < 1 || a.repeats < 1) throw dalr::Error("--batch and --repeats must be >= 1");
  if (a.size < 0 || (a.size > 0 && a.size < 32)) throw dalr::Error("--size must be 0 or >= 32");
  if (a.device.empty()) a.device = db::default_device();

  auto backend = db::make_backend(a.device, a.precision);
  db::TempDir tmp;
  json r = {{"device", backend->name()},
            {"precision", a.precision},
            {"batch", a.batch},
            {"repeats", a.repeats},
            {"model", a.model.empty() ? "random " + a.arch : a.model},
            {"machine", machine(a.device)}};
  if (!a.compressed.empty()) r["compressed"] = a.compressed;
  if (a.round_rank > 1) r["round_rank"] = a.round_rank;
  Net o, c;
  make_original(a, o, *backend, tmp);
  make_compressed(a, o, c, *backend, tmp, r);
  r["input"] = {o.arch.input.channels, o.arch.input.crop[0], o.arch.input.crop[1]};
  r["network"] = time_network(a, o, c);
  r["layers"] = json::array();
  if (!a.no_layers)
    for (const auto& p : db::factorised_layers(o.arch, c.arch))
      r["layers"].push_back(time_layer(a, o, c, p, *backend, tmp));
  r["machine"]["load_average_end"] = read_first_line("/proc/loadavg");
  print_table(r);
  if (!a.json.empty()) std::ofstream(a.json) << r.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_forward: %s\n", e.what());
  return 1;
}
