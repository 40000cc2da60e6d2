// The compress job's memory check (memory_check.hpp).
#include "core/memory_check.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/compress_plan.hpp"
#include "core/stream.hpp"
#include "dalr/error.hpp"

namespace dalr {

namespace {

// "Key:   123 kB" lines of /proc files, in bytes; 0 when absent.
double proc_kb(const char* path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.compare(0, key.size() + 1, key + ":") == 0) {
      std::istringstream in(line.substr(key.size() + 1));
      double kb = 0;
      in >> kb;
      return kb * 1024;
    }
  return 0;
}

// A cgroup limit file: a number of bytes, or "max" (v2) / a huge number (v1) for none.
double cgroup_file(const char* path) {
  std::ifstream f(path);
  std::string v;
  if (!(f >> v) || v == "max") return 0;
  char* end = nullptr;
  const double b = std::strtod(v.c_str(), &end);
  return end && *end == '\0' && b > 0 && b < 1e18 ? b : 0;
}

}  // namespace

HostMemory probe_host_memory() {
  HostMemory h;
  h.resident = proc_kb("/proc/self/status", "VmRSS");
  h.peak = proc_kb("/proc/self/status", "VmHWM");
  h.available = proc_kb("/proc/meminfo", "MemAvailable");
  h.cgroup_limit = cgroup_file("/sys/fs/cgroup/memory.max");
  if (h.cgroup_limit == 0)
    h.cgroup_limit = cgroup_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  return h;
}

double parse_memory_size(const std::string& text) {
  const auto bad = [&] {
    return Error(
        "--memory-limit must be a size such as 8G, 500M, 1.5Gi or 123456 (bytes), or "
        "none (got '" +
        text + "')");
  };
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v) || v <= 0 || !std::isdigit(text[0])) throw bad();
  std::string unit(end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  const bool binary = !unit.empty() && unit.back() == 'I';
  if (binary) unit.pop_back();
  if (unit.size() > 1) throw bad();
  const std::string units = "KMGT";
  const size_t at = unit.empty() ? std::string::npos : units.find(unit[0]);
  if (!unit.empty() && at == std::string::npos) throw bad();
  if (binary && unit.empty()) throw bad();
  const double scale = unit.empty() ? 1.0 : std::pow(binary ? 1024.0 : 1000.0, double(at + 1));
  return v * scale;
}

MemoryBudget memory_budget(const CompressOptions& o, Backend& backend) {
  MemoryBudget b;
  b.device_free = backend.available_device_bytes();  // first: a GPU's context is then resident
  const HostMemory h = probe_host_memory();
  b.baseline = h.resident;
  if (o.memory_limit == "none") {
    b.check = false;
    return b;
  }
  if (!o.memory_limit.empty()) {
    b.host_limit = parse_memory_size(o.memory_limit);
    b.host_source = "--memory-limit";
    return b;
  }
  // The process may grow by what the kernel says is available, and no further than its
  // cgroup allows.
  if (h.available > 0) {
    b.host_limit = h.resident + h.available;
    b.host_source = "MemAvailable";
  }
  if (h.cgroup_limit > 0 && (b.host_limit == 0 || h.cgroup_limit < b.host_limit)) {
    b.host_limit = h.cgroup_limit;
    b.host_source = "the cgroup's memory limit";
  }
  return b;
}

}  // namespace dalr

namespace dalr::compress_job {

namespace {

// The largest activation of one image up to the last tapped layer, and the largest
// im2col block (the fp64 forward pass's convolutions; float runs oneDNN's), per image.
void forward_shape(const Plan& p, MemoryShape& s) {
  const Arch& a = p.arch;
  const std::vector<ActShape> shapes =
      layer_input_shapes(a, a.input.channels, a.input.crop[0], a.input.crop[1]);
  size_t last = 0;
  for (size_t i = 0; i < a.layers.size(); ++i)
    for (const LayerPlan& l : p.layers)
      if (a.layers[i].name == l.name) last = std::max(last, i);
  s.image_values = shapes.front().numel();
  for (size_t i = 0; i <= last && i < shapes.size(); ++i) {
    s.max_activation = std::max(s.max_activation, shapes[i].numel());
    const LayerSpec& l = a.layers[i];
    if (s.elem == 8 && l.type == LayerType::Conv && i + 1 < shapes.size())
      s.max_im2col =
          std::max(s.max_im2col, l.in * l.kernel * l.kernel * shapes[i + 1].h * shapes[i + 1].w);
  }
  for (const TensorInfo& t : p.model->tensors()) {
    double v = 1;
    for (int64_t d : t.shape) v *= double(d);
    s.net_values += v;
  }
}

// The rank a layer's solve will have: the plan's, or its bound when chosen from the data.
int64_t rank_bound(const Plan& p, const LayerPlan& l) {
  const int64_t top = std::min(l.m, l.n);
  if (l.rank > 0) return rounded_rank(p, l.m, l.n, l.rank);
  if (p.mode != RankMode::Budget) return top;  // --max-drop starts at full rank
  // --budget-by flops: a conv layer's weights count at its positions.
  auto positions = [&](const LayerPlan& x) {
    return p.o.budget_by == "flops" && x.conv ? double(x.geometry.positions()) : 1.0;
  };
  double all = 0;
  for (const LayerPlan& o : p.layers) all += positions(o) * double(o.m) * double(o.n);
  return std::clamp<int64_t>(int64_t(*p.o.budget * all / (positions(l) * double(l.m + l.n))), 1,
                             top);
}

}  // namespace

MemoryShape memory_shape(const Plan& p) {
  const CompressOptions& o = p.o;
  MemoryShape s;
  s.elem = uses_double(p.precision) ? 8 : 4;
  s.cuda = !p.on_cpu;
  s.method = p.method;
  s.eigensolver = o.eigensolver;
  s.lambda_zero = o.lambda && *o.lambda == 0;
  s.lambda_auto = o.lambda_auto;
  s.no_error = o.no_error;
  s.save_stats = !o.save_stats.empty();
  s.source = p.stream         ? MemoryShape::Source::Stream
             : o.acts.empty() ? MemoryShape::Source::Stats
                              : MemoryShape::Source::File;
  s.stats_in = !o.stats_in.empty();
  s.batch = o.batch;
  s.samples = p.samples;
  s.sequential = p.sequential;
  s.asymmetric = p.asymmetric;
  s.test_samples = o.acts_test.empty() ? 0 : 1;
  for (const TensorInfo& t : p.model->tensors()) s.model_bytes += double(t.end - t.begin);
  if (p.stream) forward_shape(p, s);
  for (const LayerPlan& l : p.layers) {
    MemoryShape::Layer ml;
    ml.name = l.name;
    ml.m = l.m;
    ml.n = l.n;
    ml.k = rank_bound(p, l);
    ml.file_bytes = l.file_bytes;
    ml.dual = l.dual;
    ml.kept = !l.dual ? 0 : p.stream && (p.samples == 0 || p.samples > l.keep) ? l.keep : p.samples;
    ml.switches = l.dual && p.stream && (p.samples == 0 || p.samples > l.keep);
    if (l.conv) {
      ml.positions = l.geometry.positions();
      ml.tile = patch_tile(l.geometry);
    }
    s.layers.push_back(ml);
  }
  // NpyReader converts another float type through a buffer of at most 4 MiB.
  if (p.acts_elem > 0 && size_t(p.acts_elem) != s.elem)
    s.convert_bytes = std::min(double(o.batch) * double(p.layers.front().n) * double(p.acts_elem),
                               double(4 << 20));
  return s;
}

namespace {

// The largest terms of a list, "NAME SIZE", biggest first.
std::string largest_terms(std::vector<MemoryTerm> terms, size_t count) {
  std::sort(terms.begin(), terms.end(),
            [](const MemoryTerm& a, const MemoryTerm& b) { return a.bytes > b.bytes; });
  std::string s;
  for (size_t i = 0; i < terms.size() && i < count; ++i)
    s += (i ? "; " : "") + terms[i].name + " " + gigabytes(terms[i].bytes);
  return s;
}

struct Need {
  double host = 0, device = 0;
};

Need need_of(const MemoryShape& s, double baseline) {
  const MemoryEstimate e = estimate_memory(s, baseline);
  return {e.host_peak(), e.device_peak()};
}

// The options that would lower what overflows, each with what it would need, from the
// same model on a changed shape; only those that help, marked where they fit.
std::string remedies(const Plan& p, const MemoryShape& shape, bool device) {
  const MemoryBudget& b = p.budget;
  const Need now = need_of(shape, b.baseline);
  std::vector<std::string> out;
  auto offer = [&](const std::string& what, const MemoryShape& changed) {
    const Need n = need_of(changed, b.baseline);
    const bool cpu = !changed.cuda;
    const double was = device ? now.device : now.host, will = device && !cpu ? n.device : n.host;
    if (!(will < 0.97 * was) && !(device && cpu)) return;
    const bool fits = (b.host_limit == 0 || n.host <= b.host_limit) &&
                      (cpu || b.device_free == 0 || n.device <= b.device_free);
    out.push_back(what + ": " + gigabytes(n.host) + " on the host" +
                  (cpu ? "" : " and " + gigabytes(n.device) + " on the GPU") +
                  (fits ? ", fits" : ", still too much"));
  };
  const auto fp32 = [&](MemoryShape f) {
    f.elem = 4;
    f.max_im2col = 0;  // float convolutions run oneDNN's
    f.convert_bytes = p.acts_elem == 4 ? 0 : f.convert_bytes;
    return f;
  };
  bool dual = false;
  MemoryShape d = shape;
  if (!dual_refusal(p) && p.samples > 0)
    for (auto& l : d.layers)
      if (p.samples < l.n && (!l.dual || l.switches))
        l.dual = true, l.switches = false, l.kept = p.samples, dual = true;
  const std::string dual_text = "--solve dual (p = " + std::to_string(p.samples) + " < n)";
  if (dual) offer(dual_text, d);
  if (shape.elem == 8) offer("--precision fp32", fp32(shape));
  if (dual && shape.elem == 8) offer(dual_text + " --precision fp32", fp32(d));
  if (shape.layers.size() > 1) {
    MemoryShape first = shape;  // the worst single layer stands for "one per pass"
    double top = -1;
    for (const auto& l : shape.layers) {
      MemoryShape one = shape;
      one.layers = {l};
      const Need n = need_of(one, b.baseline);
      if ((device ? n.device : n.host) > top) top = device ? n.device : n.host, first = one;
    }
    offer("fewer --layer per pass (one at a time)", first);
  }
  if (needs_gram(shape.method) && shape.eigensolver != Eigensolver::TopK) {
    MemoryShape t = shape;
    t.eigensolver = Eigensolver::TopK;
    offer("--eigensolver topk", t);
  }
  if (!shape.no_error) {
    MemoryShape t = shape;
    t.no_error = true;
    offer("--no-error", t);
  }
  if (shape.lambda_auto) {
    MemoryShape t = shape;
    t.lambda_auto = false;
    offer("a fixed --lambda instead of auto", t);
  }
  if (shape.batch > 16) {
    MemoryShape t = shape;
    t.batch = std::max<int64_t>(16, shape.batch / 4);
    offer("--batch " + std::to_string(t.batch), t);
  }
  if (device) {
    MemoryShape c = shape;
    c.cuda = false;
    offer("--device cpu", c);
  }
  std::string s;
  for (const std::string& r : out) s += (s.empty() ? "" : "; ") + r;
  return s;
}

}  // namespace

void check_memory(Plan& p) {
  const MemoryShape shape = memory_shape(p);
  p.memory = estimate_memory(shape, p.budget.baseline);
  const MemoryBudget& b = p.budget;
  if (!b.check) return;
  const bool host_over = b.host_limit > 0 && p.memory.host_peak() > b.host_limit;
  const bool device_over = !p.on_cpu && b.device_free > 0 && p.memory.device_peak() > b.device_free;
  if (!host_over && !device_over) return;
  const bool device = device_over && !host_over;
  const StageMemory& st = device ? p.memory.device_peak_stage() : p.memory.host_peak_stage();
  const double need = device ? p.memory.device_peak() : p.memory.host_peak();
  const double have = device ? b.device_free : b.host_limit;
  const std::string where =
      device ? "free on the GPU" : "available to this process (" + b.host_source + ")";
  const std::string help = remedies(p, shape, device);
  throw Error(
      "not enough memory for this job: its " + st.name + " stage needs " + gigabytes(need) +
      (device ? " on the GPU" : " on the host") + " but " + gigabytes(have) + " is " + where +
      ". Largest terms: " + largest_terms(device ? st.device : st.host, 4) +
      (device ? "" : "; the program itself " + gigabytes(b.baseline)) + ". " +
      (help.empty() ? "No option of this job lowers it; " : "What would help: " + help + "; or ") +
      "--memory-limit SIZE (none: no check) if the estimate is wrong for this "
      "machine. Nothing was read or written.");
}

nlohmann::json memory_report(const Plan& p) {
  nlohmann::json j = memory_json(p.memory);
  const MemoryBudget& b = p.budget;
  j["checked"] = b.check;
  j["host_limit_bytes"] = b.host_limit > 0 ? nlohmann::json(b.host_limit) : nlohmann::json(nullptr);
  j["host_limit_source"] = b.host_source;
  j["device_free_bytes"] =
      b.device_free > 0 ? nlohmann::json(b.device_free) : nlohmann::json(nullptr);
  // What the process held at its most so far (VmHWM; start-up included), against the model.
  j["host_peak_measured_bytes"] = probe_host_memory().peak;
  return j;
}

}  // namespace dalr::compress_job
