// The compress job's first stages (compress_plan.hpp): the layers' weights, then their
// statistics from --stats, --acts FILE or --acts stream, and --save-stats.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "common/checked.hpp"
#include "common/finite.hpp"
#include "core/compress_plan.hpp"
#include "core/job_common.hpp"
#include "core/sample_keeper.hpp"
#include "core/stats_binding.hpp"
#include "core/stream.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/npy.hpp"

namespace dalr::compress_job {

namespace {

// --lambda auto: every 10th sample goes to a held-out accumulator, the rest to the fit
// one, so lambda is chosen on data the solve did not see, without a second pass.
template <typename T>
class SplitAccumulator final : public StatsAccumulator<T> {
 public:
  SplitAccumulator(std::unique_ptr<StatsAccumulator<T>> fit,
                   std::unique_ptr<StatsAccumulator<T>> held, int64_t n)
      : fit_(std::move(fit)), held_(std::move(held)), n_(n) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    check_finite(x, n_, cols, ldx, first_index);  // names the sample before the split
    fit_buf_.clear();
    held_buf_.clear();
    for (int64_t j = 0; j < cols; ++j) {
      auto& dst = (first_index + j) % 10 == 9 ? held_buf_ : fit_buf_;
      dst.insert(dst.end(), x + j * ldx, x + j * ldx + n_);
    }
    const int64_t nf = static_cast<int64_t>(fit_buf_.size()) / n_;
    const int64_t nh = static_cast<int64_t>(held_buf_.size()) / n_;
    if (nf) fit_->add(fit_buf_.data(), nf, n_, fit_count_);
    if (nh) held_->add(held_buf_.data(), nh, n_, held_count_);
    fit_count_ += nf;
    held_count_ += nh;
  }
  void merge(const LayerStats<T>& earlier) override { fit_->merge(earlier); }  // no split
  LayerStats<T> result() override {
    LayerStats<T> all = fit_->result();
    all.merge(held_->result());
    return all;
  }
  LayerStats<T> fit() { return fit_->finish(); }
  LayerStats<T> held() { return held_->finish(); }

 private:
  std::unique_ptr<StatsAccumulator<T>> fit_, held_;
  int64_t n_, fit_count_ = 0, held_count_ = 0;
  std::vector<T> fit_buf_, held_buf_;
};

template <typename T>
std::unique_ptr<StatsAccumulator<T>> make_accumulator(const Plan& p, const Layer<T>& l,
                                                      Backend& backend) {
  const int64_t n = l.w.cols, batch = p.o.batch;
  const bool outputs =
      keeps_output_statistics(p.method, !p.o.save_stats.empty(), !p.o.stats_in.empty());
  const int64_t m = outputs ? l.w.rows : 0;
  const Matrix<T>* w = outputs ? &l.w : nullptr;
  const std::vector<T>* b = outputs ? &l.b : nullptr;
  if (!p.o.lambda_auto) return backend.stats(n, m, w, b, batch);
  return std::make_unique<SplitAccumulator<T>>(backend.stats(n, m, w, b, batch),
                                               backend.stats(n, m, w, b, batch), n);
}

// The statistics of a job once its samples are in (split for --lambda auto), combined
// over the ranks into rank 0's when several processes share the samples.
template <typename T>
void take_statistics(const Plan& p, StatsAccumulator<T>& acc, LayerJob<T>& j, Communicator& comm) {
  if (!p.o.lambda_auto) {
    j.st = acc.finish();
    j.st.reduce_to_root(comm);
    return;
  }
  auto& split = static_cast<SplitAccumulator<T>&>(acc);
  j.st = split.fit();
  j.held = split.held();
  j.st.reduce_to_root(comm);
  j.held.reduce_to_root(comm);
  if (comm.rank() == 0 && j.held.count() == 0)
    throw Error("--lambda auto needs at least 10 samples (every 10th is held out)");
}

// One layer from --stats and/or --acts FILE (the plan checked the file's width). With
// several processes each rank reads its contiguous share of the file's rows, numbered as
// in the whole file (so --lambda auto holds out the same samples); rank 0 alone merges
// --stats (every rank reads it for the numbering and the checks).
template <typename T>
void gather_stats(const Plan& p, LayerJob<T>& job, Backend& backend, JobOutput& out) {
  const CompressOptions& o = p.o;
  SingleProcess single;
  Communicator& comm = o.comm ? *o.comm : single;
  json& rep = out.rep;
  const int64_t m = job.l.w.rows, n = job.l.w.cols;
  auto acc = make_accumulator(p, job.l, backend);
  int64_t first = 0;
  if (!o.stats_in.empty()) {
    std::map<std::string, std::string> meta;
    LayerStats<T> earlier = load_layer_stats<T>(o.stats_in, o.layer, m, n, &meta);
    check_stats_binding(meta, o.stats_in, *p.model, p.have_arch ? &p.arch : nullptr, o.layer,
                        out.warnings);
    rep["stats_in"] = {{"path", o.stats_in}, {"samples", earlier.count()}};
    first = earlier.count();
    if (comm.rank() == 0) acc->merge(earlier);
  }
  if (!o.acts.empty()) {
    NpyReader r(o.acts);
    const Share share = share_of(r.rows(), comm.rank(), comm.size());
    r.seek(share.first);
    std::vector<T> buf(
        static_cast<size_t>(checked_mul(n, o.batch, "--batch times the layer width")));
    for (int64_t at = first + share.first, c;
         (c = r.read_rows<T>(buf.data(), std::min(o.batch, share.last - r.position()))) > 0;
         at += c)
      acc->add(buf.data(), c, n, at);
    first += r.rows();
    rep["acts"] = {
        {"path", o.acts}, {"samples", r.rows()}, {"shape", r.shape()}, {"dtype", r.descr()}};
    if (comm.size() > 1) rep["acts"]["processes"] = comm.size();
  }
  if (first == 0) throw Error("no activation samples: the activation file is empty");
  take_statistics(p, *acc, job, comm);
  if (comm.rank() != 0) out.warnings.clear();  // every rank found the same; rank 0 reports
}

// --solve dual: the activation file's samples kept as X (n x p, one per column), and
// statistics made from them without C (stats_keeping_samples).
template <typename T>
void keep_samples(const Plan& p, LayerJob<T>& job, JobOutput& out) {
  const CompressOptions& o = p.o;
  NpyReader r(o.acts);
  auto x = std::make_shared<Matrix<T>>(job.l.w.cols, r.rows());
  const int64_t n = x->rows;
  int64_t first = 0;
  for (int64_t c; (c = r.read_rows<T>(x->ptr() + first * n, o.batch)) > 0; first += c)
    check_finite(x->ptr() + first * n, n, c, n, first);
  if (first != x->cols) throw Error(o.acts + ": expected " + std::to_string(x->cols) + " rows");
  out.rep["acts"] = {
      {"path", o.acts}, {"samples", r.rows()}, {"shape", r.shape()}, {"dtype", r.descr()}};
  job.st = stats_keeping_samples<T>(x);
  job.x = std::move(x);
}

// Every layer in one pass of `net` over --data. With several processes each rank
// streams its contiguous share of the image list (DataOptions::rank); the counts in the
// report are the totals, a skipped image is reported by the rank that skipped it. A conv
// layer's patches are cut at the size of the images the source delivers.
template <typename T>
void stream_all(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend, JobOutput& out,
                const Network& net) {
  const CompressOptions& o = p.o;
  SingleProcess single;
  Communicator& comm = o.comm ? *o.comm : single;
  std::unique_ptr<Forward<T>> fwd = make_forward<T>(backend, *net.arch, *net.model);
  DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet};
  d.rank = comm.rank();
  d.ranks = comm.size();
  std::unique_ptr<BatchSource> src = open_data(d, p.arch.input);
  std::vector<std::unique_ptr<StatsAccumulator<T>>> accs;
  std::vector<SampleKeeper<T>*> keepers;  // --solve dual: the layers that keep samples
  std::vector<StatsAccumulator<T>*> raw;
  std::vector<std::string> names;
  for (auto& j : jobs) {
    if (j.conv) {
      size_t at = 0;
      while (net.arch->layers[at].name != j.name) ++at;  // the plan found it
      j.geometry = conv_geometry(*net.arch, at, src->channels(), src->height(), src->width());
    }
    if (j.dual) {  // an fc layer (the plan)
      auto keeper = std::make_unique<SampleKeeper<T>>(
          j.l.w.cols, j.keep, p.samples,
          [&p, &j, &backend] { return make_accumulator(p, j.l, backend); });
      keepers.push_back(keeper.get());
      accs.push_back(std::move(keeper));
    } else {
      keepers.push_back(nullptr);
      accs.push_back(j.conv ? patch_accumulator(backend, j.geometry, j.l.w, j.l.b)
                            : make_accumulator(p, j.l, backend));
    }
    raw.push_back(accs.back().get());
    names.push_back(j.name);
  }
  try {
    stream_statistics(*fwd, *src, names, raw, d);
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (keepers[i] && keepers[i]->keeping()) {  // the dual (one process: the plan)
        jobs[i].st = keepers[i]->finish();
        jobs[i].x = keepers[i]->samples();
        continue;
      }
      take_statistics(p, *accs[i], jobs[i], comm);
      if (keepers[i])
        jobs[i].solve_why += "; at " + std::to_string(keepers[i]->switched_at()) +
                             " samples the next batch would pass " + std::to_string(jobs[i].keep) +
                             ", so C was formed from the kept ones and the pass went on primal";
    }
  } catch (const Error& e) {
    throw with_precision_hint(e, p.precision);
  }
  int64_t counts[2] = {src->size(), src->skipped()};  // this share's; rank 0: all
  comm.sum_to_root(counts, 2);
  if (src->skipped() > 0)
    out.warnings.push_back(
        "skipped " + std::to_string(src->skipped()) + " of " + std::to_string(src->size()) +
        " images that could not be read (first: " + src->first_skip_reason() + ")");
  if (comm.rank() != 0) return;
  out.rep["data"] = {{"path", o.data},       {"images", counts[0]}, {"skipped", counts[1]},
                     {"shuffle", o.shuffle}, {"seed", o.seed},      {"limit", o.limit}};
  if (comm.size() > 1) out.rep["data"]["processes"] = comm.size();
  if (jobs.front().st.count() == 0) throw Error("no images in " + o.data);
}

// An asymmetric pass: the plan's network and `net` (the compressed upstream) run on the
// same batches, one after the other on the host; each job's input in the original
// network is kept until the compressed one delivers its own, then C^ (ordinary
// statistics of X^), C_o (of X) and K (pairs) take the batch. One process (the plan).
template <typename T>
void stream_asymmetric(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                       JobOutput& out, const Network& net) {
  const CompressOptions& o = p.o;
  std::unique_ptr<Forward<T>> orig = make_forward<T>(backend, p.arch, *p.model);
  std::unique_ptr<Forward<T>> comp = make_forward<T>(backend, *net.arch, *net.model);
  const DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet};
  std::unique_ptr<BatchSource> src = open_data(d, p.arch.input);
  const int64_t c = src->channels(), h = src->height(), w = src->width();
  std::vector<std::unique_ptr<StatsAccumulator<T>>> hat, org;
  std::vector<std::unique_ptr<CrossAccumulator<T>>> cross;
  std::vector<std::string> names;
  for (auto& j : jobs) {
    const int64_t n = j.l.w.cols;
    if (j.conv) {
      size_t at = 0;
      while (net.arch->layers[at].name != j.name) ++at;  // the plan found it
      j.geometry = conv_geometry(*net.arch, at, c, h, w);
      hat.push_back(patch_accumulator(backend, j.geometry, j.l.w, j.l.b));
      org.push_back(patch_accumulator(backend, j.geometry, j.l.w, j.l.b));
      cross.push_back(make_cross_stats<T>(backend, n, &j.geometry, patch_tile(j.geometry)));
    } else {
      hat.push_back(make_accumulator(p, j.l, backend));
      org.push_back(make_accumulator(p, j.l, backend));
      cross.push_back(make_cross_stats<T>(backend, n, nullptr, 0));
    }
    names.push_back(j.name);
  }
  HostBatch<T> in(*src, o.batch);
  std::vector<std::vector<T>> kept(jobs.size());  // X of the batch, per job
  Progress progress("statistics (original and compressed networks)", src->size(), o.quiet);
  auto index = [&](const std::string& name) {
    return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
  };
  try {
    int64_t first = src->first_index();
    for (int64_t got; (got = in.next(*src, nullptr)) > 0; first += got) {
      orig->run_taps(in.data(), got, c, h, w, names,
                     [&](const std::string& name, const T* x, int64_t n, int64_t batch) {
                       kept[index(name)].assign(x, x + n * batch);
                     });
      comp->run_taps(in.data(), got, c, h, w, names,
                     [&](const std::string& name, const T* xh, int64_t n, int64_t batch) {
                       const size_t i = index(name);
                       const T* x = kept[i].data();
                       if (static_cast<int64_t>(kept[i].size()) != n * batch)
                         throw Error("internal: the networks' inputs of '" + name + "' differ");
                       hat[i]->add(xh, batch, n, first);
                       org[i]->add(x, batch, n, first);
                       cross[i]->add(x, xh, batch, n);
                     });
      progress.add(got);
    }
    progress.finish();
    SingleProcess single;
    for (size_t i = 0; i < jobs.size(); ++i) {
      take_statistics(p, *hat[i], jobs[i], single);
      jobs[i].orig = org[i]->finish();
      jobs[i].cross = cross[i]->result();
      jobs[i].asymmetric = true;
    }
  } catch (const Error& e) {
    throw with_precision_hint(e, p.precision);
  }
  if (src->skipped() > 0)
    out.warnings.push_back(
        "skipped " + std::to_string(src->skipped()) + " of " + std::to_string(src->size()) +
        " images that could not be read (first: " + src->first_skip_reason() + ")");
  out.rep["data"] = {{"path", o.data},       {"images", src->size()}, {"skipped", src->skipped()},
                     {"shuffle", o.shuffle}, {"seed", o.seed},        {"limit", o.limit}};
  if (jobs.front().st.count() == 0) throw Error("no images in " + o.data);
}

// Statistics that overflowed (in fp32, squares of activations beyond 1.8e19 pass float's
// 3.4e38) would give NaN factors: refused, saying what overflowed and what to do.
template <typename T>
void check_overflow(const Plan& p, const std::string& layer, const LayerStats<T>& st) {
  const char* what = nullptr;
  if (first_non_finite(st.sum_x().data(), st.sum_x().size()) >= 0)
    what = "the sums of the activations";
  else if (needs_gram(p.method) &&
           !std::isfinite(st.gram_trace()))  // |C_ij| <= sqrt(C_ii C_jj): the diagonal suffices
    what = "the Gram matrix C = sum x x^T";
  else if (first_non_finite(st.sum_y().data(), st.sum_y().size()) >= 0)
    what = "the sums of the layer's outputs";
  if (!what) return;
  throw Error("the statistics of layer '" + layer + "' overflowed at " +
              precision_name(p.precision) + ": " + what + " hold Inf or NaN (the activations " +
              "reach " + fmt(largest_activation(st), 3) + "); " + overflow_advice(p.precision));
}

std::string stats_path(const std::string& path, const std::string& layer, size_t count) {
  if (count == 1) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "." + layer + p.extension().string())).string();
}

// After the statistics of a pass: overflow checks, the timing, --save-stats.
template <typename T>
void check_and_save(const Plan& p, std::vector<LayerJob<T>>& jobs, JobOutput& out,
                    const Network& net, Clock::time_point t0) {
  if (p.o.comm && p.o.comm->rank() != 0) return;  // rank 0 checks, saves and solves
  for (const auto& j : jobs) {
    check_overflow(p, j.name, j.st);
    if (j.held.count() > 0) check_overflow(p, j.name, j.held);
  }
  out.timing["statistics"] = seconds_since(t0);
  if (p.o.save_stats.empty()) return;
  t0 = Clock::now();
  for (const auto& j : jobs) {
    // Bound to the weights (stats_binding.hpp); streamed ones to the layers before too.
    // A sequential pass's: to the network it ran, whose earlier layers are compressed.
    std::map<std::string, std::string> meta{{"dalr.layer", j.name},
                                            {"dalr.model", p.o.model},
                                            {"dalr.layer_hash", layer_hash(*net.model, j.name)}};
    if (p.stream) meta["dalr.upstream_hash"] = upstream_hash(*net.model, *net.arch, j.name);
    if (!j.upstream.empty()) meta["dalr.upstream_compressed"] = join_list(j.upstream);
    j.st.save(stats_path(p.o.save_stats, j.name, p.layers.size()), meta);
  }
  out.timing["save_stats"] = seconds_since(t0);
}

}  // namespace

template <typename T>
std::vector<LayerJob<T>> load_layers(const Plan& p) {
  std::vector<LayerJob<T>> jobs;
  for (const LayerPlan& lp : p.layers) {  // names and shapes checked by the plan
    LayerJob<T>& j = jobs.emplace_back();
    j.name = lp.name;
    j.conv = lp.conv;
    j.weight_shape = lp.weight_shape;
    j.geometry = lp.geometry;
    j.dual = lp.dual;
    j.keep = lp.keep;
    j.solve_why = lp.solve_why;
    j.l.w = from_row_major(p.model->read<T>(lp.name + ".weight").data(), lp.m, lp.n);
    if (p.model->find(lp.name + ".bias")) {
      j.l.b = p.model->read<T>(lp.name + ".bias");
      j.l.had_bias = true;
    } else {
      j.l.b.assign(static_cast<size_t>(lp.m), T(0));
    }
    check_layer_finite(lp.name, j.l.w, j.l.b);
  }
  return jobs;
}

template <typename T>
void collect_statistics(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                        JobOutput& out, const Network* net_or_null) {
  auto t0 = Clock::now();
  const Network net =
      net_or_null ? *net_or_null : Network{p.model.get(), p.have_arch ? &p.arch : nullptr};
  if (p.stream)
    stream_all(p, jobs, backend, out, net);
  else if (p.layers.front().dual)
    keep_samples<T>(p, jobs.front(), out);
  else
    gather_stats<T>(p, jobs.front(), backend, out);
  for (auto& j : jobs) {
    j.rep["solve"] = j.x ? "dual" : "primal";
    j.rep["solve_reason"] = j.solve_why;
  }
  check_and_save(p, jobs, out, net, t0);
}

template <typename T>
void collect_asymmetric_statistics(const Plan& p, std::vector<LayerJob<T>>& jobs, Backend& backend,
                                   JobOutput& out, const Network& net) {
  const auto t0 = Clock::now();
  stream_asymmetric(p, jobs, backend, out, net);
  for (auto& j : jobs) {
    j.rep["solve"] = "primal";
    j.rep["solve_reason"] = "an asymmetric sequential pass solves from its statistics";
  }
  for (const auto& j : jobs) check_overflow(p, j.name, j.orig);
  check_and_save(p, jobs, out, net, t0);
}

template std::vector<LayerJob<float>> load_layers(const Plan&);
template std::vector<LayerJob<double>> load_layers(const Plan&);
template void collect_statistics(const Plan&, std::vector<LayerJob<float>>&, Backend&, JobOutput&,
                                 const Network*);
template void collect_statistics(const Plan&, std::vector<LayerJob<double>>&, Backend&, JobOutput&,
                                 const Network*);
template void collect_asymmetric_statistics(const Plan&, std::vector<LayerJob<float>>&, Backend&,
                                            JobOutput&, const Network&);
template void collect_asymmetric_statistics(const Plan&, std::vector<LayerJob<double>>&, Backend&,
                                            JobOutput&, const Network&);

}  // namespace dalr::compress_job
