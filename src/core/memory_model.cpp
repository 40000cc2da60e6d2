// The compress job's memory model (memory_model.hpp). Each term names a buffer of the code
// it counts: src/cpu/stats.cpp and cpu_backend.cpp (CpuStats), src/cpu/solver.cpp,
// src/cpu/recon.cpp, src/cpu/lapack.cpp (workspaces), src/core/compress_*.cpp, and for the
// GPU the terms its steps check themselves (common/memory_terms.cpp).
#include "core/memory_model.hpp"

#include <algorithm>
#include <cstdio>

namespace dalr {

namespace {

constexpr double kIntBytes = 4;  // lapack_int
// CpuStats gathers small batches into a block of at most 64 MiB and 256 samples.
constexpr double kGatherBytes = double(int64_t{64} << 20);
constexpr int64_t kGatherCols = 256;
// A block size LAPACK's workspace queries use (ilaenv's nb for sytrd, ormtr, gesdd).
constexpr double kNb = 32;

using Layer = MemoryShape::Layer;

// Terms of one list, in elements of the job's scalar or in bytes.
class Terms {
 public:
  // suffix: appended to every name (a layer's, when there are several).
  Terms(std::vector<MemoryTerm>& out, double elem, std::string suffix = {})
      : out_(out), elem_(elem), suffix_(std::move(suffix)) {}
  void add(const std::string& name, double elems) { bytes(name, elems * elem_); }
  void bytes(const std::string& name, double b) {
    if (b > 0) out_.push_back({name + suffix_, b});
  }
  void all(const std::vector<MemoryTerm>& ts) {
    for (const MemoryTerm& t : ts) bytes(t.name, t.bytes);
  }

 private:
  std::vector<MemoryTerm>& out_;
  double elem_;
  std::string suffix_;
};

std::string dims(int64_t a, int64_t b) {
  return std::to_string(a) + " x " + std::to_string(b);
}

// CpuStats (cpu_backend.cpp): adds of at least `cap` columns go straight to LayerStats::add
// (whose output scratch Y is m x columns); smaller ones are gathered into an n x cap block.
struct Gather {
  double ycols = 0;
  bool block = false;
  int64_t cap = 1;
};
Gather cpu_gather(int64_t n, double elem, int64_t batch, int64_t p) {
  Gather g;
  g.cap =
      std::clamp<int64_t>(static_cast<int64_t>(kGatherBytes / (double(n) * elem)), 1, kGatherCols);
  const int64_t chunk = p > 0 ? std::min(batch, p) : batch;
  if (chunk >= g.cap) {
    g.ycols = double(chunk);
    g.block = p == 0 || (p % batch != 0 && p % batch < g.cap);  // a short last chunk
  } else {
    g.ycols = double(p > 0 ? std::min(g.cap, p) : g.cap);
    g.block = true;
  }
  return g;
}

// The eigensolver of an m x m problem for the top k (cpu/lapack.cpp): syevd's workspace
// (1 + 6m + 2m^2 and 3 + 5m integers) and eigenvalues, or sytrd + stemr + ormtr's.
double eig_bytes(int64_t m, int64_t k, Eigensolver es, double elem) {
  const double M = double(m), K = double(k);
  if (use_topk_eigensolver(es, m, k)) {
    const double range =
        (4 * M + std::max({kNb * M, 18 * M, kNb * K + 4160})) * elem + (10 * M + 2 * K) * kIntBytes;
    if (!use_subspace_eigensolver(es, m, k)) return range;
    // The subspace iteration first (cpu/subspace_eig.cpp), the index range after it where it
    // gives up: four m x l blocks and l x l rotations, its QR's tau and workspace (l x 64),
    // the Rayleigh-Ritz matrix in double and dsyevd's workspace.
    const double l = double(subspace_block(m, k));
    const double subspace = (4 * M * l + l * l + l + kNb * l) * elem +
                            (l * l + l + 1 + 6 * l + 2 * l * l) * 8 + (3 + 5 * l) * kIntBytes;
    return std::max(range, subspace);
  }
  return (1 + 7 * M + 2 * M * M) * elem + (3 + 5 * M) * kIntBytes;
}

// One layer's largest moment inside the CPU solve, beside its factors (counted apart).
void cpu_solve_terms(const MemoryShape& s, const Layer& l, Terms& t) {
  const double m = double(l.m), n = double(l.n), k = double(l.k), e = double(s.elem);
  const std::string gname = s.method == Method::DalrExact ? "H" : "G";
  const double eig = eig_bytes(l.m, l.k, s.eigensolver, e);
  switch (s.method) {
    case Method::Dalr:
    case Method::DalrExact: {
      const double q = l.dual ? double(l.kept) : n;  // the ridge's dimension
      const double ridge_ws =
          s.lambda_zero ? eig_bytes(int64_t(q), int64_t(q), Eigensolver::Full, e) : 0.0;
      const bool exact = s.method == Method::DalrExact;
      // The parts after the ridge, the largest of which peaks with what came before.
      double after = 0;
      if (l.dual) {
        const double p = q;
        t.add("Z = W X (" + dims(l.m, l.kept) + ")", m * p);
        t.add("K = X^T X and its factor (2 x " + dims(l.kept, l.kept) + ")", 2 * p * p);
        if (!exact) {
          after = std::max(m * m * e + eig, (s.lambda_zero ? 2 : 1) * p * k * e);
        } else {
          const double zt = p * m * e, tmp = s.lambda_zero ? p * m * e : 0;
          after = zt + std::max({tmp, p * m * e + m * m * e + eig, p * m * e + p * k * e});
        }
      } else {
        t.add("W C (" + dims(l.m, l.n) + ")", m * n);
        t.add("the factor of C + lambda I (" + dims(l.n, l.n) + ")", n * n);
        if (!exact) {
          after = std::max(m * m * e + eig, (s.lambda_zero ? 2 : 1) * n * k * e);
        } else {
          const double wrt = n * m * e, tmp = s.lambda_zero ? n * m * e : 0;
          after = wrt + std::max({tmp, m * m * e + eig, n * k * e});
        }
      }
      if (ridge_ws >= after)
        t.bytes("the ridge's eigendecomposition (lambda = 0)", ridge_ws);
      else
        t.bytes(gname + " (m x m), its eigensolver and the products after it", after);
      return;
    }
    case Method::Svd:
    case Method::SvdBc: {
      const double r = std::min(m, n), mx = std::max(m, n);
      t.add("W's copy, U and V^T for the SVD (m n + (m + n) r)", m * n + (m + n) * r + r);
      t.add("gesdd workspace", 3 * r * r + std::max(mx, 4 * r * r + 4 * r) + kNb * (m + n));
      t.bytes("gesdd integers (8 r)", 8 * r * kIntBytes);
      return;
    }
    case Method::PruneMean:
    case Method::PruneMax:
      t.bytes("scores and their order (2 m)", 2 * m * 8);
      return;
  }
}

// The error over samples read in chunks of `batch` (recon.cpp): x (unless read in place),
// Y, B x and Yhat.
void chunk_error_terms(const MemoryShape& s, const Layer& l, bool x_chunk, Terms& t) {
  const double b = double(s.batch);
  if (x_chunk) t.add("activation chunk (n x batch)", double(l.n) * b);
  t.add("Y, Yhat and B x of a chunk ((2 m + k) x batch)", (2 * double(l.m) + double(l.k)) * b);
}

class Model {
 public:
  explicit Model(const MemoryShape& s) : s_(s), e_(double(s.elem)) {}

  std::vector<StageMemory> stages() {
    std::vector<StageMemory> out;
    out.push_back(load());
    out.push_back(statistics());
    out.push_back(solve());
    out.push_back(error());
    out.push_back(write());
    return out;
  }

 private:
  const MemoryShape& s_;
  double e_;

  bool stream() const { return s_.source == MemoryShape::Source::Stream; }
  // A layer's terms carry its name when there are several (the report's keys stay apart).
  std::string tag(const Layer& l) const {
    return s_.layers.size() > 1 ? ", " + l.name : std::string();
  }
  // The adds an accumulator sees: batches of samples, or a conv layer's tiles of patches.
  int64_t chunk(const Layer& l) const { return l.positions > 0 ? l.tile : s_.batch; }
  Gather gather(const Layer& l) const {
    const int64_t p = l.positions > 0 ? s_.samples * l.positions : s_.samples;
    return cpu_gather(l.n, e_, chunk(l), p);
  }

  // The outputs the statistics keep sums and maxima of: m, or 0 (keeps_output_statistics).
  int64_t output_width(const Layer& l) const {
    return keeps_output_statistics(s_.method, s_.save_stats, s_.stats_in) ? l.m : 0;
  }

  // The weights: the model file's pages read (mapped), and W and b in T.
  void weights(Terms& t, bool whole_file) const {
    double read = 0, w = 0;
    for (const Layer& l : s_.layers) {
      read += l.file_bytes;
      w += double(l.m) * double(l.n) + double(l.m);
    }
    t.bytes(whole_file ? "the model file's pages (mapped)" : "the layers' pages of the model file",
            whole_file ? s_.model_bytes : read);
    t.add("W and b, each layer", w);
  }

  // What each layer holds from the end of the pass on: C (and the output statistics'
  // scratch that LayerStats keeps), or the kept samples X.
  void held_statistics(StageMemory& st, bool in_pass) const {
    for (const Layer& l : s_.layers) {
      Terms h(st.host, e_, tag(l)), d(st.device, e_, tag(l));
      if (s_.asymmetric)  // on the host on every backend (Backend's defaults); W_r at the solve
        h.add("C_o, K and W_r of the asymmetric fit (2 x n x n + m x n)",
              2 * double(l.n) * double(l.n) + double(l.m) * double(l.n));
      const int copies = s_.lambda_auto ? 2 : 1;  // --lambda auto: fit and held-out parts
      if (l.dual && !l.switches) {
        h.add("X, the kept samples (" + dims(l.n, l.kept) + ")", double(l.n) * double(l.kept));
        continue;
      }
      if (l.dual && in_pass)  // the samples kept until the switch, when C is formed
        h.add("X kept until C is formed (" + dims(l.n, l.kept) + ")", double(l.n) * double(l.kept));
      if (s_.cuda) {  // during the pass C is the GPU statistics' own (gpu_stats_terms)
        if (!in_pass) d.add("C (n x n) on the device", double(l.n) * double(l.n));
        if (s_.save_stats && !in_pass)
          h.add("C (n x n), fetched for --save-stats", double(l.n) * double(l.n));
        continue;
      }
      const Gather g = gather(l);
      h.add(copies > 1 ? "C twice, fit and held out (2 x n x n)" : "C (n x n)",
            copies * double(l.n) * double(l.n));
      const int64_t ym = output_width(l);
      if (ym > 0)
        h.add("output statistics' scratch (m x " + std::to_string(int64_t(g.ycols)) + ")",
              copies * double(ym) * g.ycols);
      h.bytes(ym > 0 ? "sums and maxima (2 (n + m) doubles)" : "sums and maxima (2 n doubles)",
              copies * 2 * double(l.n + ym) * 8);
    }
  }

  StageMemory load() const {
    StageMemory st{"load", {}, {}};
    Terms h(st.host, e_);
    weights(h, false);
    double most = 0;
    for (const Layer& l : s_.layers) most = std::max(most, double(l.m) * double(l.n));
    h.add("a weight as read, before its copy (m x n)", most);
    return st;
  }

  StageMemory statistics() const {
    StageMemory pass{"statistics", {}, {}};
    Terms ph(pass.host, e_), pd(pass.device, e_);
    weights(ph, stream());
    held_statistics(pass, true);
    for (const Layer& l : s_.layers) {  // the accumulators' working buffers
      if (l.dual && !l.switches) continue;
      Terms h(pass.host, e_, tag(l)), d(pass.device, e_, tag(l));
      if (l.positions > 0)  // PatchAccumulator's tile (the GPU cuts it on the device)
        (s_.cuda ? d : h)
            .add("patch tile (n x " + std::to_string(l.tile) + ")", double(l.n) * double(l.tile));
      if (s_.cuda) {
        d.all(gpu_stats_terms(l.n, output_width(l), chunk(l), s_.elem));
        if (l.positions == 0)
          h.add("pinned staging blocks (2 x n x batch)", 2 * double(l.n) * double(s_.batch));
        continue;
      }
      const Gather g = gather(l);
      if (g.block)
        h.add("gathering block (n x " + std::to_string(g.cap) + ")", double(l.n) * g.cap);
      if (s_.lambda_auto)
        h.add("fit / held-out split of a chunk (n x batch)", double(l.n) * s_.batch);
    }
    const Layer& first = s_.layers.front();
    if (s_.source == MemoryShape::Source::File) {
      if (!first.dual) ph.add("activation chunk (n x batch)", double(first.n) * double(s_.batch));
      ph.bytes("conversion buffer of the activation file", s_.convert_bytes);
    }
    if (s_.stats_in)  // LayerStats::load: the file's pages, C as read, C allocated; then merged
      ph.add("--stats being read (the file's pages, C read, C: 3 x n x n)",
             3 * double(first.n) * double(first.n));
    if (stream()) forward(ph, pd);
    if (s_.asymmetric) {  // the original network's pass beside the compressed one's
      forward(ph, pd);
      for (const Layer& l : s_.layers) {
        Terms h(pass.host, e_, tag(l));
        if (l.positions > 0)
          h.add("the cross statistics' two patch tiles (2 x n x " + std::to_string(l.tile) + ")",
                2 * double(l.n) * double(l.tile));
      }
    }
    if (s_.sequential)  // a pass's network: the model with the factors so far, mapped
      ph.bytes("a sequential pass's model file (mapped)", s_.model_bytes);
    if (!s_.save_stats) return pass;
    // --save-stats after the pass: the forward pass is gone, C is copied into the file's tensor.
    StageMemory save{"statistics", {}, {}};
    Terms sh(save.host, e_);
    weights(sh, stream());
    held_statistics(save, false);
    double most = 0;
    for (const Layer& l : s_.layers) most = std::max(most, double(l.n) * double(l.n));
    sh.add("C's copy for --save-stats (n x n)", most);
    return save.host_bytes() > pass.host_bytes() ? save : pass;
  }

  // The forward pass of --acts stream (cpu/forward.cpp; the GPU's holds the same on the device).
  void forward(Terms& h, Terms& d) const {
    const double b = double(s_.batch);
    Terms& w = s_.cuda ? d : h;
    w.add("the network's weights", s_.net_values);
    // The float CPU pass runs oneDNN, which holds a third copy in its blocked layout, and
    // its kernels and scratch (measured: about 5 MB).
    const bool dnnl = !s_.cuda && s_.elem == 4;
    w.add("activations (" + std::string(dnnl ? "3" : "2") + " x batch x " +
              std::to_string(s_.max_activation) + ")",
          (dnnl ? 3 : 2) * b * double(s_.max_activation));
    if (dnnl) h.bytes("oneDNN kernels and scratch (measured)", 5e6);
    h.bytes("input batch (float" + std::string(s_.elem == 8 ? ", and widened" : "") + ")",
            b * double(s_.image_values) * (4 + (s_.elem == 8 ? 8 : 0)));
    if (!s_.cuda) h.add("im2col of one image", double(s_.max_im2col));
  }

  // The error from the statistics on the CPU (recon.cpp): one m x n x n product with C.
  void stats_error_terms(const Layer& l, Terms& t) const {
    t.add("W C, D = W - A B, D C (3 x m x n)", 3 * double(l.m) * double(l.n));
    t.add("B C (k x n)", double(l.k) * double(l.n));
  }

  void factors(Terms& t) const {
    double f = 0;
    for (const Layer& l : s_.layers) f += double(l.k) * double(l.m + l.n) + double(l.m);
    t.add("factors A, B and bias, each layer", f);
  }

  // OpenBLAS's packing buffers (and the LAPACK code) that the solve's products touch,
  // resident from then on: not allocated by this code, so measured (bench/RESULTS.md, 2
  // threads): about 5 MB and GEMM_Q x the widest product's columns, 448 n values for the
  // primal solve (products over n), 256 (n + p) for the dual.
  void blas_buffers(Terms& t) const {
    if (s_.cuda) return;
    double most = 0;
    for (const Layer& l : s_.layers) {
      const bool dual = l.dual && !l.switches;
      most = std::max(most, dual ? 256.0 * double(l.n + l.kept) : 448.0 * double(l.n));
    }
    t.bytes("BLAS packing buffers and library code (measured)", 5e6 + most * e_);
  }

  // Resident after the pass: weights, statistics or samples, factors (all layers', an
  // upper bound while the first ones are solved), and what the solve's products touched.
  StageMemory resident(const char* name, bool whole_file) const {
    StageMemory st{name, {}, {}};
    Terms h(st.host, e_);
    weights(h, whole_file);
    held_statistics(st, false);
    factors(h);
    blas_buffers(h);
    return st;
  }

  // The stage at its largest layer: resident + that layer's transient terms.
  template <typename F>
  StageMemory worst_layer(const char* name, bool whole_file, F&& transient) const {
    StageMemory best = resident(name, whole_file);
    const double base_h = best.host_bytes(), base_d = best.device_bytes();
    StageMemory out = best;
    double top = -1;
    for (const Layer& l : s_.layers) {
      StageMemory st = best;
      Terms h(st.host, e_, tag(l)), d(st.device, e_, tag(l));
      transient(l, h, d);
      const double size = st.host_bytes() - base_h + st.device_bytes() - base_d;
      if (size > top) top = size, out = std::move(st);
    }
    return out;
  }

  StageMemory solve() const {
    return worst_layer("solve", stream(), [&](const Layer& l, Terms& h, Terms& d) {
      const bool dual = l.dual && !l.switches;
      if (s_.cuda) {
        d.all(dual ? gpu_solve_dual_terms(l.m, l.n, l.kept, l.k, s_.elem)
                   : gpu_solve_terms(s_.method, l.m, l.n, l.k, s_.elem));
        return;
      }
      Layer one = l;
      one.dual = dual;
      std::vector<MemoryTerm> solve_terms, err_terms;
      Terms st(solve_terms, e_), et(err_terms, e_);  // h adds the layer's name
      cpu_solve_terms(s_, one, st);
      if (s_.lambda_auto)  // the held-out errors from the statistics, between the solves
        stats_error_terms(l, et);
      h.all(total_bytes(err_terms) > total_bytes(solve_terms) ? err_terms : solve_terms);
    });
  }

  StageMemory error() const {
    return worst_layer("error", stream(), [&](const Layer& l, Terms& h, Terms& d) {
      const bool dual = l.dual && !l.switches;
      if (!s_.no_error) {
        if (s_.source == MemoryShape::Source::File) {
          chunk_error_terms(s_, l, true, h);
          h.bytes("conversion buffer of the activation file", s_.convert_bytes);
        } else if (dual) {
          chunk_error_terms(s_, l, false, h);  // over the kept X, read in place
        } else if (s_.cuda) {
          d.all(gpu_error_terms(l.m, l.n, l.k, true, s_.elem));
        } else {
          stats_error_terms(l, h);
        }
      } else if (s_.test_samples > 0) {
        chunk_error_terms(s_, l, true, h);
      }
    });
  }

  StageMemory write() const {
    StageMemory st = resident("write", true);
    Terms h(st.host, e_);
    double f32 = 0, one = 0;
    for (const Layer& l : s_.layers) {
      f32 += double(l.k) * double(l.m + l.n) + double(l.m);
      one = std::max(one, double(l.k) * double(std::max(l.m, l.n)));
    }
    h.bytes("the factors as float32 for the file", 4 * f32);
    h.add("a factor in row-major order", one);
    return st;
  }
};

}  // namespace

double MemoryEstimate::host_peak() const {
  return baseline + host_peak_stage().host_bytes();
}

double MemoryEstimate::device_peak() const {
  return device_peak_stage().device_bytes();
}

const StageMemory& MemoryEstimate::host_peak_stage() const {
  return *std::max_element(stages.begin(), stages.end(), [](const auto& a, const auto& b) {
    return a.host_bytes() < b.host_bytes();
  });
}

const StageMemory& MemoryEstimate::device_peak_stage() const {
  return *std::max_element(stages.begin(), stages.end(), [](const auto& a, const auto& b) {
    return a.device_bytes() < b.device_bytes();
  });
}

MemoryEstimate estimate_memory(const MemoryShape& shape, double baseline) {
  MemoryEstimate e;
  e.baseline = baseline;
  if (!shape.layers.empty()) e.stages = Model(shape).stages();
  return e;
}

nlohmann::json memory_json(const MemoryEstimate& e) {
  nlohmann::json stages = nlohmann::json::object();
  for (const StageMemory& s : e.stages) {
    nlohmann::json h = nlohmann::json::object(), d = nlohmann::json::object();
    for (const MemoryTerm& t : s.host) h[t.name] = t.bytes;
    for (const MemoryTerm& t : s.device) d[t.name] = t.bytes;
    stages[s.name] = {{"host_bytes", s.host_bytes()},
                      {"device_bytes", s.device_bytes()},
                      {"host_terms", h},
                      {"device_terms", d}};
  }
  nlohmann::json j = {{"host_peak_bytes", e.host_peak()},
                      {"device_peak_bytes", e.device_peak()},
                      {"baseline_bytes", e.baseline},
                      {"stages", stages}};
  if (!e.stages.empty()) {
    j["host_peak_stage"] = e.host_peak_stage().name;
    j["device_peak_stage"] =
        e.device_peak() > 0 ? nlohmann::json(e.device_peak_stage().name) : nlohmann::json(nullptr);
  }
  return j;
}

std::string gigabytes(double bytes) {
  char buf[32];
  if (bytes < 1e8)
    std::snprintf(buf, sizeof buf, "%.3g MB", bytes / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.3g GB", bytes / 1e9);
  return buf;
}

}  // namespace dalr
