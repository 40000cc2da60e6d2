// Streaming benchmark: VGG19 (the vgg19 preset's exact tensor shapes, random He
// weights, or --model FILE) on an image folder of real-sized JPEGs
// (bench/make_bench_images.py). Images/s of (a) decode, (b) forward up to --layer's
// input, (c) the statistics accumulator at the layer's width, each alone, and (d) the
// whole stream_statistics path overlapped; (e) peak resident memory of (d) at N and
// 10 N images, each in a fresh child process, to show memory does not grow with N.
//   bench_stream --data DIR [--device cpu|cuda] [--images 64 --batch 16 --workers 4
//                --layer classifier.0 --size 224 --repeats 3 --json out.json]
//   bench_stream --write-model vgg19.bin [--size S]   (only writes the random VGG19, 548 MiB)
// --size S feeds S x S crops (resize S*256/224) instead of 224: VGG's adaptive pool
// keeps the classifier's width (25088 at classifier.0), so a small S makes a CPU run
// cheap while (c) is unchanged. Folders with fewer images than asked are repeated
// through symbolic links in a temporary folder.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bench_model.hpp"
#include "core/stream.hpp"
#include "cpu/blas_core.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/images.hpp"
#include "dalr/safetensors.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using dalr::bench::default_device;
using dalr::bench::make_backend;
using dalr::bench::TempDir;
using dalr::bench::use_crop;
using dalr::bench::write_vgg19;

struct Args {
  std::string data, model, device, layer = "classifier.0", json, precision = "fp32";
  int64_t images = 64, batch = 16, size = 0, repeats = 3, child = 0;
  int workers = 4;
  bool no_memory = false;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Peak resident set of this process (VmHWM), in MiB.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  return -1;
}

// `dir` if it holds at least `count` images, else a folder of links under `tmp` that
// repeats its images (same classes) until there are `count`.
std::string folder_with(const std::string& dir, int64_t count, const fs::path& tmp) {
  std::vector<std::string> classes;
  const auto list = dalr::list_image_folder(dir, &classes);
  if (static_cast<int64_t>(list.size()) >= count) return dir;
  const fs::path out = tmp / ("images-" + std::to_string(count));
  for (int64_t i = 0; i < count; ++i) {
    const auto& s = list[static_cast<size_t>(i) % list.size()];
    const fs::path src = fs::absolute(s.path);
    const fs::path cls = out / classes[static_cast<size_t>(s.label)];
    fs::create_directories(cls);
    fs::create_symlink(
        src, cls / ("r" + std::to_string(i / list.size()) + "_" + src.filename().string()));
  }
  return out.string();
}

struct Model {
  std::unique_ptr<dalr::SafetensorsFile> file;
  dalr::Arch arch;
  dalr::Matrix<float> w;  // the layer's weight (m x n) and bias, for output statistics
  std::vector<float> b;
};

Model load_model(const std::string& path, const std::string& layer, int64_t size) {
  Model m;
  m.file = std::make_unique<dalr::SafetensorsFile>(path);
  m.arch = dalr::load_arch(*m.file, "vgg19");
  use_crop(m.arch, size);
  const auto& wi = m.file->at(layer + ".weight");
  if (wi.shape.size() != 2) throw dalr::Error("--layer " + layer + " is not a linear layer");
  m.w = dalr::from_row_major(m.file->read_f32(wi.name).data(), wi.shape[0], wi.shape[1]);
  m.b = m.file->find(layer + ".bias") ? m.file->read_f32(layer + ".bias")
                                      : std::vector<float>(static_cast<size_t>(wi.shape[0]));
  return m;
}

dalr::DataOptions data_options(const Args& a, const std::string& dir, int64_t count) {
  return dalr::DataOptions{dir, a.workers, count, false, 0, a.batch, true};
}

// (d) in a child: the whole streaming path on `count` images, then its peak memory.
json overlapped(const Args& a, dalr::Backend& backend, const Model& m, const std::string& dir,
                int64_t count) {
  auto fwd = dalr::make_forward<float>(backend, m.arch, *m.file);
  auto acc = backend.stats(m.w.cols, m.w.rows, &m.w, &m.b, a.batch);
  const auto d = data_options(a, dir, count);
  auto src = dalr::open_data(d, m.arch.input);
  const double t0 = now_s();
  dalr::stream_statistics<float>(*fwd, *src, {a.layer}, {acc.get()}, d);
  const double t_stream = now_s() - t0;  // the GPU may still be finishing the last batch
  const auto st = acc->result();
  const double t = now_s() - t0;
  return {{"images", st.count()},           {"seconds", t},
          {"images_per_s", st.count() / t}, {"stream_seconds", t_stream},
          {"result_seconds", t - t_stream}, {"peak_rss_mib", peak_rss_mib()}};
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs this program again (a fresh process, so its peak is its own) on `count` images.
json run_child(const Args& a, const std::string& model, const std::string& dir, int64_t count) {
  std::string cmd = quote(fs::read_symlink("/proc/self/exe").string()) + " --child " +
                    std::to_string(count) + " --data " + quote(dir) + " --model " + quote(model) +
                    " --device " + a.device + " --layer " + quote(a.layer) + " --batch " +
                    std::to_string(a.batch) + " --workers " + std::to_string(a.workers) +
                    " --size " + std::to_string(a.size) + " --precision " + a.precision;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw dalr::Error("cannot start " + cmd);
  std::string out;
  char buf[4096];
  for (size_t got; (got = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, got);
  const int rc = pclose(p);
  if (rc != 0) throw dalr::Error("child run on " + std::to_string(count) + " images failed");
  return json::parse(out);
}

// (a) decode, (b) forward, (c) statistics, each alone, in this process.
json separate(const Args& a, dalr::Backend& backend, const Model& m, const std::string& dir) {
  json r;
  const auto d = data_options(a, dir, a.images);
  std::vector<float> buf;
  int64_t decoded = 0;
  const double t_dec = dalr::bench::wall_median(a.repeats, [&] {
    auto src = dalr::open_data(d, m.arch.input);
    buf.resize(static_cast<size_t>(a.batch * src->channels() * src->height() * src->width()));
    decoded = 0;
    for (int64_t got; (got = src->next(buf.data(), a.batch, nullptr)) > 0;) decoded += got;
  });
  r["decode"] = {{"images", decoded}, {"seconds", t_dec}, {"images_per_s", decoded / t_dec}};

  // The first batch, decoded once and run repeatedly.
  auto src = dalr::open_data(d, m.arch.input);
  const int64_t c = src->channels(), h = src->height(), w = src->width();
  const int64_t nb = src->next(buf.data(), a.batch, nullptr);
  auto fwd = dalr::make_forward<float>(backend, m.arch, *m.file);
  int64_t width = 0;
  const double t_fwd = dalr::bench::wall_median(
      a.repeats, [&] { width = fwd->run(buf.data(), nb, c, h, w, a.layer).rows; });
  r["forward"] = {{"batch", nb},
                  {"input", {c, h, w}},
                  {"seconds_per_batch", t_fwd},
                  {"images_per_s", nb / t_fwd}};
  fwd.reset();

  // Random post-ReLU activations of the layer's width. The GPU accumulator is
  // asynchronous, so each time ends with result(), whose n x n download is a fixed
  // cost: the streaming rate is N over the time of 2 N images minus that of N.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  dalr::Matrix<float> x(width, a.batch);
  for (auto& v : x.data) v = std::max(0.0f, nd(rng));
  auto acc = backend.stats(m.w.cols, m.w.rows, &m.w, &m.b, a.batch);
  const auto adds = [&](int64_t count) {
    for (int64_t done = 0; done < count; done += a.batch)
      acc->add(x.ptr(), std::min(a.batch, count - done), x.ld(), done);
    acc->result();
  };
  const double t_st = dalr::bench::wall_median(a.repeats, [&] { adds(a.images); });
  const double t_st2 = dalr::bench::wall_median(a.repeats, [&] { adds(2 * a.images); });
  const int64_t added = a.images;
  const double t_result = std::max(t_st - (t_st2 - t_st), 0.0);
  r["statistics"] = {{"n", m.w.cols},
                     {"m", m.w.rows},
                     {"images", added},
                     {"seconds", t_st},
                     {"result_seconds", t_result},
                     {"images_per_s", added / t_st},
                     // null when the difference drowns in noise (a tiny layer)
                     {"images_per_s_without_result",
                      t_st2 - t_st > 0.05 * t_st ? json(added / (t_st2 - t_st)) : json(nullptr)}};
  return r;
}

void print_table(const json& r) {
  std::printf("bench_stream: %s, %s, %s, layer %s (n = %lld), batch %lld, %d workers\n",
              r["device"].get<std::string>().c_str(), r["precision"].get<std::string>().c_str(),
              r["model"].get<std::string>().c_str(), r["layer"].get<std::string>().c_str(),
              static_cast<long long>(r["statistics"]["n"].get<int64_t>()),
              static_cast<long long>(r["batch"].get<int64_t>()), r["workers"].get<int>());
  const auto row = [](const char* what, const json& j) {
    std::printf("  %-34s %10.2f images/s\n", what, j["images_per_s"].get<double>());
  };
  row("(a) decode + preprocess", r["decode"]);
  row("(b) forward to the layer's input", r["forward"]);
  row("(c) statistics, with final result", r["statistics"]);
  if (!r["statistics"]["images_per_s_without_result"].is_null())
    std::printf("  %-34s %10.2f images/s (fixed result() %.2f s)\n",
                "(c) statistics, streaming rate",
                r["statistics"]["images_per_s_without_result"].get<double>(),
                r["statistics"]["result_seconds"].get<double>());
  if (r.contains("overlapped")) {
    row("(d) overlapped, end to end", r["overlapped"]);
    row("(d) overlapped at 10 N", r["overlapped_10x"]);
    const auto& mem = r["memory"];
    std::printf("  (e) peak RSS: %.0f MiB at %lld images, %.0f MiB at %lld images (ratio %.3f)\n",
                mem["peak_rss_mib_1x"].get<double>(),
                static_cast<long long>(mem["images_1x"].get<int64_t>()),
                mem["peak_rss_mib_10x"].get<double>(),
                static_cast<long long>(mem["images_10x"].get<int64_t>()),
                mem["ratio"].get<double>());
  }
}

}  // namespace

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"Images/s of decode, forward, statistics and the overlapped stream; peak memory"};
  Args a;
  app.add_option("--data", a.data, "Image folder (bench/make_bench_images.py)");
  app.add_option("--model", a.model, "Model file (default: random VGG19 in a temporary file)");
  app.add_option("--device", a.device, "cpu or cuda (default: cuda if present)");
  app.add_option("--layer", a.layer, "Linear layer whose input is measured")->capture_default_str();
  app.add_option("--images", a.images, "Images per measurement (N)")->capture_default_str();
  app.add_option("--batch", a.batch, "Images per batch")->capture_default_str();
  app.add_option("--workers", a.workers, "Decoding threads")->capture_default_str();
  app.add_option("--size", a.size, "Crop size instead of the model's (0: the model's 224)")
      ->capture_default_str();
  app.add_option("--repeats", a.repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_option("--precision", a.precision,
                 "fp32 | tf32 (CUDA) | fp16 | bf16: the forward pass's precision, as dalr-gpu's "
                 "(statistics in fp32)")
      ->capture_default_str();
  app.add_flag("--no-memory", a.no_memory, "Skip (d) and (e), the child runs at N and 10 N");
  app.add_option("--json", a.json, "Also write the JSON result to this file");
  app.add_option("--child", a.child)->group("");  // hidden: one overlapped run
  std::string write_model;
  app.add_option("--write-model", write_model,
                 "Only write the random VGG19 (He weights, seed 19; with --size, its input "
                 "is that crop) to this file and exit");
  CLI11_PARSE(app, argc, argv);
  if (!write_model.empty()) {
    write_vgg19(write_model, a.size);
    return 0;
  }
  if (a.data.empty()) throw dalr::Error("--data DIR is required");
  if (a.device.empty()) a.device = default_device();
  if (a.images < 1 || a.batch < 1 || a.workers < 1) throw dalr::Error("sizes must be positive");

  auto backend = make_backend(a.device, a.precision);
  if (a.child > 0) {
    const Model m = load_model(a.model, a.layer, a.size);
    std::printf("%s\n", overlapped(a, *backend, m, a.data, a.child).dump().c_str());
    return 0;
  }
  TempDir tmp;
  json r = {{"device", backend->name()},
            {"precision", a.precision},
            {"layer", a.layer},
            {"batch", a.batch},
            {"workers", a.workers},
            {"images", a.images},
            {"repeats", a.repeats},
            {"data", a.data},
            {"model", a.model.empty() ? "random vgg19" : a.model}};
  if (a.model.empty()) {
    a.model = (tmp.path / "vgg19.safetensors").string();
    const double t0 = now_s();
    write_vgg19(a.model);
    std::fprintf(stderr, "bench_stream: random VGG19 written in %.1f s\n", now_s() - t0);
  }
  {
    const Model m = load_model(a.model, a.layer, a.size);
    r["input"] = {m.arch.input.channels, m.arch.input.crop[0], m.arch.input.crop[1]};
    r.update(separate(a, *backend, m, folder_with(a.data, a.images, tmp.path)));
  }
  if (!a.no_memory) {
    backend.reset();  // the children hold their own device memory
    const json one = run_child(a, a.model, folder_with(a.data, a.images, tmp.path), a.images);
    const json ten =
        run_child(a, a.model, folder_with(a.data, 10 * a.images, tmp.path), 10 * a.images);
    r["overlapped"] = one;
    r["overlapped_10x"] = ten;
    r["memory"] = {
        {"images_1x", one["images"]},
        {"images_10x", ten["images"]},
        {"peak_rss_mib_1x", one["peak_rss_mib"]},
        {"peak_rss_mib_10x", ten["peak_rss_mib"]},
        {"ratio", ten["peak_rss_mib"].get<double>() / one["peak_rss_mib"].get<double>()}};
  }
  print_table(r);
  if (!a.json.empty()) std::ofstream(a.json) << r.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_stream: %s\n", e.what());
  return 1;
}
