#include "cli/commands.hpp"

#include <algorithm>
#include <cstdlib>
#include <iomanip>
#include <iostream>

#include "cli/inspect.hpp"
#include "common/split_list.hpp"
#include "dalr/backend.hpp"
#include "io/decode.hpp"
#ifdef DALR_HAVE_CUDA
#include "dalr/cuda.hpp"
#endif
#include "common/one_line.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"

namespace dalr::cli {

const char* version() {
  return "0.1.0";
}

namespace {

struct DeviceChoice {
  bool cpu = true;
  int index = 0;  // the CUDA device when !cpu
};

// This process's place among those mpirun started on this machine (OpenMPI, MPICH); 0
// for a single process.
[[maybe_unused]] int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(var)) return std::max(0, std::atoi(v));
  return 0;
}

DeviceChoice choose_device(const std::string& device, bool quiet) {
  if (device == "cpu") return {};
  int index = 0;
  if (device.rfind("cuda:", 0) == 0) {
    try {
      index = std::stoi(device.substr(5));
    } catch (const std::exception&) {
      throw Error("--device " + device + ": expected cuda:N with a device number N");
    }
  } else if (device != "cuda" && device != "auto") {
    throw Error("--device must be auto, cuda, cuda:N or cpu (got '" + device + "')");
  }
#ifdef DALR_HAVE_CUDA
  // Several processes on a machine (mpirun): each takes its own GPU, its local rank
  // modulo the devices, unless --device cuda:N names one.
  if ((device == "auto" || device == "cuda") && cuda::device_count() > 0)
    index = local_rank() % cuda::device_count();
  if (device != "auto" || cuda::available()) return {false, index};
  if (!quiet) std::cerr << "dalr-gpu: no CUDA device found; running on the CPU\n";
#else
  (void)index;
  if (device != "auto")
    throw Error("--device " + device + ": this dalr-gpu was built without CUDA (use --device cpu)");
  if (!quiet) std::cerr << "dalr-gpu: built without CUDA; running on the CPU\n";
#endif
  return {};
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& device, const std::string& precision,
                                      bool quiet) {
  const DeviceChoice d = choose_device(device, quiet);
  const Precision p = parse_precision(precision, d.cpu);
#ifdef DALR_HAVE_CUDA
  if (!d.cpu) return cuda::make_backend(d.index, p);
#endif
  return make_cpu_backend(p);
}

namespace {

constexpr const char* kEigensolverHelp =
    "dalr, dalr-exact: auto | full | topk | subspace. How the top k eigenvectors are found: "
    "the full eigendecomposition, only the top k (LAPACK MRRR, cuSOLVER Xsyevdx), or on the "
    "CPU a Chebyshev-filtered subspace iteration to LAPACK's residual (MRRR where it does not "
    "converge; Xsyevdx on the GPU); same subspace to rounding. auto takes subspace when "
    "m >= 1024 and k <= m / 8, else top-k when m >= 512 and k <= m / 5, where each is faster";

std::vector<int64_t> parse_ranks(const std::string& s) {
  std::vector<int64_t> out;
  for (const auto& t : split_list(s)) {
    size_t used = 0;
    int64_t k = 0;
    try {
      k = std::stoll(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != t.size() || t.empty())
      throw Error("--ranks: '" + t + "' is not a whole number (e.g. --ranks 32,64,128)");
    out.push_back(k);
  }
  return out;
}

}  // namespace

void Commands::add_sweep(CLI::App& app) {
  sweep_ = app.add_subcommand(
      "sweep",
      "Accuracy of every (method, rank) point on a test split, from one pass over the\n"
      "training split (statistics) and one over the test split (cached layer inputs).\n"
      "Example: dalr-gpu sweep --model M.bin --layer classifier.0 --data train/ --test test/ \\\n"
      "           --methods dalr,svd,prune-mean --ranks 32,64,128 --out results/fc6");
  auto* s = sweep_;
  std::string methods;
  for (const auto& m : method_names()) methods += (methods.empty() ? "" : ",") + m;
  s->add_option("--model", sopt_.model, "Model with dalr.arch metadata (or --arch)");
  s->add_option("--layer", sopt_.layer, "The fc or conv layer to compress: NAME of NAME.weight");
  s->add_option("--methods", smethods_, "Comma-separated methods, the table's rows: " + methods);
  s->add_option("--ranks", sranks_,
                "Comma-separated ranks k, the table's columns (pruning keeps the units of the "
                "same parameter budget); ranks above min(m, n) or that save nothing are skipped");
  s->add_option("--data", sopt_.data,
                "Training split: image folder (class subfolders) or .npy (N, C, H, W); the "
                "layer's statistics are collected from it");
  s->add_option("--stats", sopt_.stats_in,
                "Instead of --data: statistics saved by `compress --save-stats`");
  s->add_option("--test", sopt_.test, "Test split: image folder with one subfolder per class");
  s->add_option("--out", sopt_.out,
                "PREFIX: write PREFIX.csv, PREFIX.md, PREFIX.json, PREFIX.svg and "
                "PREFIX-spectrum.svg");
  s->add_option("--precision", sprecision_,
                "auto (fp64 on the CPU, fp32 on the GPU) | fp64 | fp32 | tf32: statistics and "
                "solve (the test split runs in fp32, as evaluate's default) | fp16 | bf16: "
                "16-bit activations in both forward passes (tensor cores on the GPU, emulated "
                "rounding on the CPU), statistics and solve in fp32");
  s->add_option("--lambda", slambda_, "Ridge lambda, absolute (dalr, dalr-exact)")->default_str("");
  s->add_option("--lambda-rel", sopt_.lambda_rel,
                "Ridge relative to trace(C)/n when --lambda is not given");
  s->add_option("--device", sdevice_, "auto | cuda | cuda:N | cpu (as for compress)");
  s->add_option("--batch", sopt_.batch, "Images per forward batch (both splits)");
  s->add_option("--workers", sopt_.workers, "Image decoding threads");
  add_image_cap(s);
  s->add_option("--limit", sopt_.limit, "Use at most this many training images (0: all)");
  s->add_option("--test-limit", sopt_.test_limit, "Use at most this many test images (0: all)");
  s->add_flag("--shuffle", sopt_.shuffle,
              "Shuffle both splits (with --seed) before the limits, as compress/evaluate do");
  s->add_option("--seed", sopt_.seed, "Seed of --shuffle");
  s->add_option("--arch", sopt_.arch, "Preset for a state dict without dalr.arch metadata");
  s->add_option(
      "--input-size", sopt_.input_size,
      "Square crop of an --arch preset's input (default 224, ImageNet's), resized first to "
      "N*256/224");
  s->add_flag("--quiet,-q", sopt_.quiet, "Print nothing but errors");
  s->add_option("--eigensolver", seigensolver_, kEigensolverHelp);
}

// compress: what to read and write, then how (precision, device, data).
void Commands::add_compress(CLI::App& app) {
  compress_ = app.add_subcommand(
      "compress",
      "Replace one fc layer NAME (NAME.weight m x n, NAME.bias m) by NAME.0 (k x n, no bias)\n"
      "followed by NAME.1 (m x k, bias), fitted to the layer's input activations; a conv\n"
      "layer (c_out x c_in x kh x kw) by NAME.0 (k filters of its size, stride, padding and\n"
      "dilation, no bias) and NAME.1 (1x1, c_out x k, bias), fitted to its input patches.\n"
      "Example: dalr-gpu compress --model M.safetensors --layer ip1 --acts acts.npy \\\n"
      "           --method dalr --rank 16 --out small.safetensors --report report.json");
  auto* c = compress_;
  c->add_option("--model", copt_.model, "Model file (safetensors; *.bin or *.safetensors)")
      ->required();
  c->add_option("--layer", copt_.layer,
                "Layer to compress: the NAME of NAME.weight (fc or conv); with --acts stream, "
                "several separated by commas, collected in one pass (conv layers: see "
                "--independent)")
      ->required();
  c->add_option("--acts", copt_.acts,
                "The layer's input activations, .npy of shape (p, n), one sample per row "
                "(float32/float64/float16, C or Fortran order); or `stream`: run the network "
                "on --data up to the layer and keep only the statistics");
  c->add_option("--acts-test", copt_.acts_test,
                "Held-out activations: the report adds the reconstruction error on them");
  c->add_option("--out", copt_.out, "Compressed model to write (safetensors)")->required();
  c->add_option("--report", copt_.report, "Write the JSON report here");
  std::string methods;
  for (const auto& m : method_names()) methods += (methods.empty() ? "" : "|") + m;
  c->add_option("--method", copt_.method, "Compression method: " + methods);
  add_compress_ranks(c);
  c->add_option("--precision", precision_,
                "auto (fp64 on the CPU, fp32 on the GPU) | fp64 | fp32 | tf32 (tensor cores, CUDA "
                "only): forward pass, accumulation and solve | fp16 | bf16: 16-bit activations "
                "in the forward pass (tensor cores and channels-last on the GPU, emulated "
                "rounding on the CPU), accumulation and solve in fp32");
  c->add_option("--device", device_,
                "auto (cuda when a device is present, else cpu) | cuda | cuda:N | cpu");
  c->add_option("--batch", copt_.batch,
                "Samples per streamed chunk (with --acts stream: images per forward batch, "
                "default 64)");
  c->add_option("--data", copt_.data,
                "With --acts stream: an image folder (one subfolder per class; JPEG/PNG) or a "
                ".npy of shape (N, C, H, W) already preprocessed");
  c->add_option("--arch", copt_.arch,
                "Architecture preset for a state dict without dalr.arch metadata: vgg11, vgg13, "
                "vgg16, vgg19 (and _bn)");
  c->add_option(
      "--input-size", copt_.input_size,
      "Square crop of an --arch preset's input (default 224, ImageNet's), resized first to "
      "N*256/224");
  c->add_option("--workers", copt_.workers, "Image decoding threads");
  add_image_cap(c);
  c->add_option("--limit", copt_.limit, "Use at most this many images (0: all)");
  c->add_flag("--shuffle", copt_.shuffle, "Shuffle the images (with --seed) before --limit");
  c->add_option("--seed", copt_.seed, "Seed of --shuffle");
  c->add_flag("--independent", copt_.independent,
              "Conv layers among several: collect every layer's statistics in one pass of the "
              "original network, instead of one pass per conv layer in network order through "
              "the network whose earlier given layers are already compressed (the default)");
  c->add_option("--sequential", copt_.sequential,
                "Sequential passes through a compressed upstream (dalr, dalr-exact): "
                "`asymmetric` (default; fit the compressed layer on its inputs in the "
                "compressed network to the ORIGINAL layer's outputs, Zhang et al. 2015) or "
                "`symmetric` (the ordinary fit on the compressed network's inputs alone)")
      ->check(CLI::IsMember({"asymmetric", "symmetric"}));
  c->add_flag("--quiet,-q", quiet_, "Print nothing but errors");
}

// compress: how much to keep (rank, keep, budget, max-drop) and how to solve.
void Commands::add_compress_ranks(CLI::App* c) {
  c->add_option("--rank", rank_,
                "Rank k of the factorisation (pruning: keep the units that fit the parameter "
                "budget of rank k)")
      ->default_str("");
  c->add_option("--keep", keep_,
                "Instead of --rank: fraction of the layer's weights to keep, in (0, 1]")
      ->default_str("");
  c->add_option("--budget", budget_,
                "Instead of --rank/--keep, with several --layer: keep this fraction of their "
                "weights in all, ranks allocated from the layers' spectra")
      ->default_str("");
  c->add_option("--budget-by", copt_.budget_by,
                "What --budget counts: params (the layers' weights, the default) or flops "
                "(their multiply-adds per image; a conv layer's are its weights times its "
                "output positions)");
  c->add_option("--max-drop", max_drop_,
                "Instead of --rank/--keep/--budget, with several --layer and --acts stream: "
                "the greedy joint search, shrinking one layer's rank per step while the top-1 "
                "accuracy on --val stays within this many percentage points of the "
                "uncompressed one")
      ->default_str("");
  c->add_option("--test", copt_.test,
                "With --max-drop: also report the result's (and the original's) top-1 on this "
                "labelled image folder, which the search never sees");
  c->add_option("--val", copt_.val,
                "With --max-drop: the labelled image folder the accuracy is measured on");
  c->add_option("--val-limit", copt_.val_limit,
                "With --max-drop: use at most this many --val images (0: all)");
  c->add_option("--shrink", copt_.shrink,
                "With --max-drop: a step multiplies one layer's rank by this (rounded down, "
                "at least 1 less)");
  c->add_option("--round-rank", copt_.round_rank,
                "Round the rank (or kept units) up to a multiple of this, e.g. 8 or 16 for "
                "tensor cores; the report shows the parameter cost")
      ->default_str("");
  c->add_option("--lambda", lambda_str_,
                "Ridge lambda (dalr, dalr-exact): a number (absolute), or `auto`: chosen from "
                "lambda_rel in {1e-5 ... 1} by the reconstruction error on every 10th sample, "
                "held out (no extra pass)")
      ->default_str("");
  c->add_option("--lambda-rel", copt_.lambda_rel,
                "Ridge relative to trace(C)/n when --lambda is not given");
  c->add_option("--next-layer", copt_.next_layer,
                "Pruning only: also drop the matching input columns of NEXT.weight");
  c->add_option("--stats", copt_.stats_in,
                "Start from saved statistics (with --acts: add more data to them)");
  c->add_flag("--no-error", copt_.no_error,
              "Skip the reconstruction error on the training statistics (2 (m + k) n^2 "
              "flops, on the job's device; most of a minute at VGG19 fc6 on a small CPU): "
              "the report's error_train is null");
  c->add_option("--eigensolver", eigensolver_, kEigensolverHelp);
  c->add_option("--solve", copt_.solve,
                "dalr, dalr-exact: primal (from C = X X^T, n x n), dual (from the p samples "
                "kept in memory: p x p and m x m problems, for p < n; with --acts stream kept "
                "while fewer than n, then C is formed) or auto (dual when p < n and it fits "
                "the memory; on a GPU also when it costs fewer flops)")
      ->default_str("auto");
  c->add_option("--memory-limit", copt_.memory_limit,
                "The most host memory the job may use, e.g. 8G, 500M, 1.5Gi (default: what "
                "the machine has available, MemAvailable and the cgroup's limit); none: no "
                "check. A job the memory model says cannot fit is refused before any work");
  c->add_option("--save-stats", copt_.save_stats,
                "Save the accumulated statistics (C, means, maxima, count) to resume later");
}

void Commands::add_evaluate(CLI::App& app) {
  evaluate_ = app.add_subcommand(
      "evaluate",
      "Top-1 and top-5 accuracy of a model (compressed or not) on an image folder, and with\n"
      "--compare the agreement of its predictions with another model's. Class folders map to\n"
      "outputs by the model's class names (metadata dalr.classes) when it has them (a folder\n"
      "that is not a class is an error), else by sorted folder name (with a warning).\n"
      "Example: dalr-gpu evaluate --model small.bin --data test/ --compare vgg19.bin");
  auto* e = evaluate_;
  e->add_option("--model", eopt_.model, "Model with dalr.arch metadata (or --arch)")->required();
  e->add_option("--data", eopt_.data,
                "Image folder (one subfolder per class) or .npy (N, C, H, W) without labels")
      ->required();
  e->add_option("--compare", eopt_.compare, "Another model: report the top-1 agreement");
  e->add_option("--arch", eopt_.arch, "Preset for a state dict without dalr.arch metadata");
  e->add_option(
      "--input-size", eopt_.input_size,
      "Square crop of an --arch preset's input (default 224, ImageNet's), resized first to "
      "N*256/224");
  e->add_option("--report", eopt_.report, "Write the JSON result here");
  e->add_option("--predictions", eopt_.predictions,
                "Write one CSV row per image: path, true_class, true_index, predicted_index, "
                "predicted_class, softmax_probability (of the predicted class)");
  e->add_option("--precision", eprecision_,
                "fp32 | fp64 | tf32 (CUDA only) | fp16 | bf16 (16-bit activations; emulated "
                "rounding on the CPU)");
  e->add_option("--device", edevice_, "auto | cuda | cuda:N | cpu (as for compress)");
  e->add_option("--batch", eopt_.batch, "Images per forward batch");
  e->add_option("--workers", eopt_.workers, "Image decoding threads");
  add_image_cap(e);
  e->add_option("--limit", eopt_.limit, "Use at most this many images (0: all)");
  e->add_flag("--shuffle", eopt_.shuffle, "Shuffle the images (with --seed) before --limit");
  e->add_option("--seed", eopt_.seed, "Seed of --shuffle");
  e->add_flag("--quiet,-q", eopt_.quiet, "No progress lines");
}

void Commands::add_inspect(CLI::App& app) {
  inspect_ = app.add_subcommand(
      "inspect", "List a model's tensors (name, dtype, shape, parameters), metadata and fc layers");
  inspect_->add_option("--model", inspect_model_, "Model or statistics file (safetensors)")
      ->required();
  inspect_->add_flag("--json", inspect_json_, "Print JSON instead of a table");
}

Commands::Commands(CLI::App& app, Communicator& comm) : comm_(comm) {
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);  // a repeated option: the last one wins
  add_compress(app);
  add_evaluate(app);
  add_sweep(app);
  add_inspect(app);
}

void Commands::add_image_cap(CLI::App* verb) {
  verb->add_option("--max-image-pixels", max_image_pixels_,
                   "Refuse images declaring more than N pixels (width x height) before decoding "
                   "them (default 268435456, or DALR_MAX_IMAGE_PIXELS)");
}

int Commands::run() {
  for (CLI::App* verb : {compress_, evaluate_, sweep_})
    if (verb->parsed() && verb->count("--max-image-pixels"))
      io::set_max_image_pixels(max_image_pixels_);
  if (compress_->parsed()) return run_compress();
  if (comm_.size() > 1)
    throw Error("only compress shares its work between processes (mpirun -np " +
                std::to_string(comm_.size()) + "); run this verb as one process");
  if (inspect_->parsed()) return run_inspect();
  if (evaluate_->parsed()) return run_evaluate();
  if (sweep_->parsed()) return run_sweep();
  return 2;
}

int Commands::run_compress() {
  // The values as given; compress() checks them (dalr/compress.hpp: one of the four).
  if (compress_->count("--rank")) copt_.rank = rank_;
  if (compress_->count("--keep")) copt_.keep = keep_;
  if (compress_->count("--budget")) copt_.budget = budget_;
  if (compress_->count("--max-drop")) copt_.max_drop = max_drop_;
  if (compress_->count("--round-rank") && copt_.round_rank < 1)
    throw Error("--round-rank must be >= 1 (got " + std::to_string(copt_.round_rank) + ")");
  if (compress_->count("--lambda")) {
    if (lambda_str_ == "auto") {
      copt_.lambda_auto = true;
    } else {
      // strtod, not stod: a subnormal such as 1e-320 is a number (stod calls it out of
      // range); only text that is not a number at all is refused here.
      char* end = nullptr;
      const double v = std::strtod(lambda_str_.c_str(), &end);
      if (lambda_str_.empty() || end != lambda_str_.c_str() + lambda_str_.size())
        throw Error("--lambda must be a number >= 0 or auto (got '" + lambda_str_ + "')");
      copt_.lambda = v;
    }
  }
  // Streaming images: a forward batch of 512 VGG-sized images would hold gigabytes.
  if (copt_.acts == "stream" && !compress_->count("--batch")) copt_.batch = 64;
  const bool root = comm_.rank() == 0;  // the other ranks print only errors
  copt_.quiet = quiet_ || !root;
  copt_.eigensolver = eigensolver_from_name(eigensolver_);
  copt_.comm = &comm_;
  std::unique_ptr<Backend> backend = make_backend(device_, precision_, copt_.quiet);
  CompressResult r = compress(copt_, *backend);
  const std::string who = root ? "" : " (process " + std::to_string(comm_.rank()) + ")";
  for (const auto& w : r.warnings)
    std::cerr << "dalr-gpu: warning" << who << ": " << one_line(w) << "\n";
  if (!quiet_) std::cout << r.summary;
  return 0;
}

int Commands::run_evaluate() {
  std::unique_ptr<Backend> backend = make_backend(edevice_, eprecision_, eopt_.quiet);
  const EvaluateResult r = evaluate(eopt_, *backend);
  std::cout << r.summary;
  return 0;
}

int Commands::run_sweep() {
  sopt_.methods = split_list(smethods_);
  sopt_.ranks = parse_ranks(sranks_);
  if (sweep_->count("--lambda")) sopt_.lambda = slambda_;
  sopt_.eigensolver = eigensolver_from_name(seigensolver_);
  std::unique_ptr<Backend> backend = make_backend(sdevice_, sprecision_, sopt_.quiet);
  const SweepResult r = sweep(sopt_, *backend);
  for (const auto& w : r.warnings) std::cerr << "dalr-gpu: warning: " << one_line(w) << "\n";
  if (!sopt_.quiet) {
    std::cout << sweep_table(r);
    std::cout << std::fixed << std::setprecision(2) << "\nstatistics " << r.stats_s
              << " s, test features " << r.features_s << " s, total " << r.total_s << " s on "
              << r.device << "\n";
    if (!sopt_.out.empty())
      std::cout << "wrote " << sopt_.out << ".{csv,md,json,svg}, " << sopt_.out
                << "-spectrum.svg\n";
  }
  return 0;
}

int Commands::run_inspect() {
  std::cout << inspect_text(inspect_model_, inspect_json_);
  return 0;
}

}  // namespace dalr::cli
