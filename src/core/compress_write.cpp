// The compress job's write stage (compress_plan.hpp): the compressed model, its
// architecture and metadata.
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "core/compress_plan.hpp"
#include "core/job_common.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr::compress_job {

namespace {

template <typename T>
void check_tensor(const Plan& p, const LayerJob<T>& job, const std::string& tensor,
                  const std::vector<T>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    const double x = static_cast<double>(v[i]);
    if (std::isfinite(x) && std::fabs(x) <= std::numeric_limits<float>::max()) continue;
    const std::string value = std::isnan(x)   ? "NaN"
                              : std::isinf(x) ? "Inf"
                                              : fmt(x, 3) +
                                                    ", beyond float32's range (the model "
                                                    "stores float32)";
    throw Error("cannot write " + p.o.out + ": tensor '" + tensor + "' would hold " + value +
                " at index " + std::to_string(i) + ": the computation overflowed at " +
                precision_name(p.precision) + " with activations up to " +
                fmt(largest_activation(job.st), 3) + "; " + overflow_advice(p.precision));
  }
}

}  // namespace

std::string overflow_advice(Precision precision) {
  return precision == Precision::Fp64 ? "scale the activations down"
                                      : "use --precision fp64 or scale the activations down";
}

template <typename T>
void check_factors(const Plan& p, const LayerJob<T>& job) {
  const bool prune = is_pruning(job.fac.method);
  check_tensor(p, job, job.name + (prune ? ".weight" : ".0.weight"), job.fac.b.data);
  if (!prune) check_tensor(p, job, job.name + ".1.weight", job.fac.a.data);
  check_tensor(p, job, job.name + (prune ? ".bias" : ".1.bias"), job.fac.bias);
}

namespace {

// B (k x n) and A (m x k) row-major are a conv pair's weights as they are: k filters of
// the original c_in x kh x kw, and c_out 1x1 filters over the k channels.
template <typename T>
void add_factors(const LayerJob<T>& job, std::vector<TensorOut>& out) {
  const std::string& name = job.name;
  const Factors<T>& fac = job.fac;
  const int64_t m = job.l.w.rows, n = job.l.w.cols, k = fac.rank;
  const std::vector<int64_t>& ws = job.weight_shape;
  const std::vector<int64_t> b_shape =
      job.conv ? std::vector<int64_t>{k, ws[1], ws[2], ws[3]} : std::vector<int64_t>{k, n};
  const std::vector<int64_t> a_shape =
      job.conv ? std::vector<int64_t>{m, k, 1, 1} : std::vector<int64_t>{m, k};
  if (is_pruning(fac.method)) {  // fc layers only (the plan)
    out.push_back(TensorOut::convert(name + ".weight", {k, n}, to_row_major(fac.b), DType::F32));
    out.push_back(TensorOut::convert(name + ".bias", {k}, fac.bias, DType::F32));
  } else {
    out.push_back(TensorOut::convert(name + ".0.weight", b_shape, to_row_major(fac.b), DType::F32));
    out.push_back(TensorOut::convert(name + ".1.weight", a_shape, to_row_major(fac.a), DType::F32));
    out.push_back(TensorOut::convert(name + ".1.bias", {m}, fac.bias, DType::F32));
  }
}

}  // namespace

// Every tensor of the model in its order: the compressed layers' factors in place of
// their weight and bias, --next-layer's weight without the pruned inputs, the rest as is.
template <typename T>
std::vector<TensorOut> factored_tensors(const Plan& p, const std::vector<const LayerJob<T>*>& jobs,
                                        json& rep) {
  const SafetensorsFile& f = *p.model;
  const LayerJob<T>& first = *jobs.front();
  std::vector<TensorOut> out;
  for (const TensorInfo& t : f.tensors()) {
    const LayerJob<T>* job = nullptr;
    bool is_bias = false;
    for (const LayerJob<T>* j : jobs) {
      if (t.name == j->name + ".weight") job = j;
      if (t.name == j->name + ".bias") is_bias = true;
    }
    if (is_bias) continue;
    if (job) {
      add_factors(*job, out);
      continue;
    }
    if (p.next && t.name == p.next->name) {
      const int64_t rows = p.next->shape[0], k = first.fac.rank;
      const std::vector<float> dst =
          kept_columns(f.read_f32(t.name), rows, first.l.w.rows, first.fac.kept_units);
      check_tensor(p, first, t.name, std::vector<T>(dst.begin(), dst.end()));
      out.push_back(TensorOut::f32(t.name, {rows, k}, dst));
      rep["next_layer"] = {
          {"name", p.o.next_layer}, {"shape_before", p.next->shape}, {"shape_after", {rows, k}}};
      continue;
    }
    out.push_back(TensorOut::borrow(f, t));
  }
  return out;
}

// The architecture after the replacement, so that a compressed model runs (and
// compresses) again.
template <typename T>
Arch factored_arch(const Plan& p, const std::vector<const LayerJob<T>*>& jobs,
                   std::vector<std::string>& warnings) {
  Arch arch = p.arch;
  for (const LayerJob<T>* jp : jobs) {
    const LayerJob<T>& j = *jp;
    if (!is_pruning(j.fac.method)) {
      arch = j.conv ? replace_conv_with_factors(arch, j.name, j.rank)
                    : replace_linear_with_factors(arch, j.name, j.rank);
      continue;
    }
    bool next_fixed = false;
    for (size_t i = 0; i < arch.layers.size(); ++i) {
      LayerSpec& l = arch.layers[i];
      if (l.name == j.name) l.out = j.rank;
      if (!p.o.next_layer.empty() && l.name == p.o.next_layer) {
        l.in = j.rank;
        next_fixed = true;
      }
    }
    if (!next_fixed)
      warnings.push_back("pruned layer '" + j.name +
                         "' without --next-layer: the following layer still expects " +
                         std::to_string(j.l.w.rows) + " inputs, so the model no longer runs");
  }
  return arch;
}

template <typename T>
void write_model(const Plan& p, const std::vector<LayerJob<T>>& jobs, JobOutput& out) {
  const CompressOptions& o = p.o;
  const auto t0 = Clock::now();
  std::map<std::string, std::string> meta = p.model->metadata();
  std::vector<const LayerJob<T>*> all;
  for (const auto& j : jobs) all.push_back(&j);
  if (p.have_arch)
    for (const auto& [k, v] : arch_metadata(factored_arch(p, all, out.warnings))) meta[k] = v;
  std::string ranks;
  for (const auto& j : jobs) ranks += (ranks.empty() ? "" : ",") + std::to_string(j.rank);
  meta["dalr.method"] = method_name(p.method);
  meta["dalr.layer"] = o.layer;
  meta["dalr.rank"] = ranks;
  meta["dalr.lambda"] = needs_gram(p.method) ? fmt(jobs.front().lambda, 17) : "0";
  meta["dalr.source"] = std::filesystem::path(o.model).filename().string();
  meta["dalr.acts"] = p.stream ? "stream:" + o.data : (o.acts.empty() ? o.stats_in : o.acts);
  meta["dalr.samples"] = std::to_string(jobs.front().st.count());
  out.staged.push_back(stage_safetensors(o.out, factored_tensors(p, all, out.rep), meta));
  out.timing["write"] = seconds_since(t0);
}

template void check_factors(const Plan&, const LayerJob<float>&);
template void check_factors(const Plan&, const LayerJob<double>&);
template void write_model(const Plan&, const std::vector<LayerJob<float>>&, JobOutput&);
template void write_model(const Plan&, const std::vector<LayerJob<double>>&, JobOutput&);
template std::vector<TensorOut> factored_tensors(const Plan&,
                                                 const std::vector<const LayerJob<float>*>&, json&);
template std::vector<TensorOut> factored_tensors(const Plan&,
                                                 const std::vector<const LayerJob<double>*>&,
                                                 json&);
template Arch factored_arch(const Plan&, const std::vector<const LayerJob<float>*>&,
                            std::vector<std::string>&);
template Arch factored_arch(const Plan&, const std::vector<const LayerJob<double>*>&,
                            std::vector<std::string>&);

}  // namespace dalr::compress_job
