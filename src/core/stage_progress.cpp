#include "core/stage_progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace dalr {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string x(int64_t a, int64_t b) {
  return std::to_string(a) + " x " + std::to_string(b);
}

// An eigendecomposition of s x s for the top k (or all) eigenvectors, weighted by what
// bench_eigen measured (the full one about 5 s^3; the top-k one the tridiagonal reduction,
// about 3 s^3 in practice, and the back-transformation of k vectors, 2 s^2 k).
// The subspace iteration (CPU only), as bench_eigen measured it against the others: about
// 16 s^2 l + 8 s l^2 for its block of l (a few GEMMs of s x s x l per step, QR and
// Rayleigh-Ritz).
enum class EigKind { Full, Range, Subspace };

EigKind eig_kind(Eigensolver es, int64_t s, int64_t k, bool host) {
  if (host && use_subspace_eigensolver(es, s, k)) return EigKind::Subspace;
  return use_topk_eigensolver(es, s, k) ? EigKind::Range : EigKind::Full;
}

double eig_flops(int64_t s, int64_t k, EigKind kind) {
  const double d = double(s), l = double(subspace_block(s, k));
  switch (kind) {
    case EigKind::Subspace:
      return 16 * d * d * l + 8 * d * l * l;
    case EigKind::Range:
      return 3 * d * d * d + 2 * d * d * double(k);
    case EigKind::Full:
      break;
  }
  return 5 * d * d * d;
}

std::string eig_what(int64_t k, EigKind kind) {
  switch (kind) {
    case EigKind::Subspace:
      return " (top " + std::to_string(k) + ", subspace iteration)";
    case EigKind::Range:
      return " (top " + std::to_string(k) + ")";
    case EigKind::Full:
      break;
  }
  return " (all)";
}

// (C + lambda I)^-1 applied to q columns: a Cholesky factor, or C's eigendecomposition
// (the pseudo-inverse) when lambda == 0.
double ridge_flops(int64_t n, int64_t q, double lambda) {
  const double d = double(n);
  return lambda > 0 ? d * d * d / 3 + 2 * d * d * double(q) : 5 * d * d * d + 4 * d * d * double(q);
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

}  // namespace

double solve_flops(const SolveOptions& opt, int64_t m, int64_t n, bool host) {
  const int64_t k = opt.rank, r = std::min(m, n);
  const double M = double(m), N = double(n), K = double(k);
  const EigKind topk = eig_kind(opt.eigensolver, m, k, host);
  switch (opt.method) {
    case Method::Dalr:  // W C, G, its eigenvectors, C W^T U_k, the ridge on k columns
      return 2 * M * N * N + 2 * M * M * N + eig_flops(m, k, topk) + 2 * M * N * K +
             ridge_flops(n, k, opt.lambda);
    case Method::DalrExact:  // W C, the ridge on m columns, H, its eigenvectors, B
      return 2 * M * N * N + ridge_flops(n, m, opt.lambda) + 2 * M * M * N + eig_flops(m, k, topk) +
             2 * M * N * K;
    case Method::Svd:
    case Method::SvdBc:
      return 6 * M * N * double(r);
    case Method::PruneMean:
    case Method::PruneMax:
      return M * N;
  }
  return 0;
}

std::string solve_description(const SolveOptions& opt, int64_t m, int64_t n, bool host) {
  const int64_t k = opt.rank;
  const std::string head = std::string(method_name(opt.method)) + ", " + x(m, n) + ", " +
                           (is_pruning(opt.method) ? "units " : "rank ") + std::to_string(k);
  if (!needs_gram(opt.method)) return head + (is_pruning(opt.method) ? "" : "): SVD of " + x(m, n));
  return head + "): eigenvectors of " + x(m, m) +
         eig_what(k, eig_kind(opt.eigensolver, m, k, host)) + ", " +
         (opt.lambda > 0 ? "Cholesky" : "pseudo-inverse") + " of " + x(n, n);
}

// Z = W X, K = X^T X, G or H (m x m), its eigenvectors, the ridge of K, B = S^T X^T.
double solve_flops_dual(const SolveOptions& opt, int64_t m, int64_t n, int64_t p, bool host) {
  const double M = double(m), N = double(n), P = double(p), K = double(opt.rank);
  const EigKind topk = eig_kind(opt.eigensolver, m, opt.rank, host);
  const double rhs = opt.method == Method::DalrExact ? M : K;
  return 2 * M * N * P + N * P * P + 2 * M * M * P + eig_flops(m, opt.rank, topk) +
         ridge_flops(p, int64_t(rhs), opt.lambda) + 2 * K * N * P +
         (opt.method == Method::DalrExact ? 2 * P * P * M : 2 * M * P * K);
}

std::string solve_description_dual(const SolveOptions& opt, int64_t m, int64_t n, int64_t p,
                                   bool host) {
  return std::string(method_name(opt.method)) + ", " + x(m, n) + ", rank " +
         std::to_string(opt.rank) + ", dual over " + std::to_string(p) +
         " samples): " + "eigenvectors of " + x(m, m) +
         eig_what(opt.rank, eig_kind(opt.eigensolver, m, opt.rank, host)) + ", " +
         (opt.lambda > 0 ? "Cholesky" : "pseudo-inverse") + " of " + x(p, p);
}

double error_flops(int64_t m, int64_t n, int64_t k, int64_t samples) {
  const double M = double(m), N = double(n), K = double(k);
  if (samples == 0) return 2 * (M + K) * N * N;
  return double(samples) * (2 * M * N + 2 * K * (M + N));
}

StageRates::StageRates(const Backend& backend) {
  // First guesses: this project's 2-core build machine reaches about 1e11 flop/s in the
  // fp32 solve (bench/RESULTS.md), half that in fp64; a data-centre GPU about 100x more.
  const bool gpu = backend.name().rfind("cuda", 0) == 0;
  host_ = !gpu;
  const bool fp64 = uses_double(backend.precision());
  rate_ = (gpu ? 1e13 : 1e11) * (fp64 ? 0.5 : 1.0);
}

void StageRates::observe(double flops, double seconds) {
  // Stages under a tenth of a second say more about overheads than about the rate.
  if (seconds > 0.1 && flops > 0) rate_ = flops / seconds;
}

StageProgress::StageProgress(std::string what, double flops, StageRates& rates, bool quiet)
    : what_(std::move(what)),
      label_(what_.substr(0, what_.find(" ("))),
      flops_(flops),
      rates_(rates),
      quiet_(quiet),
      tty_(isatty(2)),
      start_(now_s()) {
  if (quiet_) return;
  const double est = rates_.seconds(flops_);
  what_ += " (est. " + format_seconds(est) + ") ...";
  if (est >= 1.0) show();
  ticker_ = std::thread([this] { tick(); });
}

StageProgress::~StageProgress() {
  stop();
  if (open_line_) std::fputc('\n', stderr);  // an exception: the error on a line of its own
}

void StageProgress::show() {
  std::fprintf(stderr, "%s\n", what_.c_str());
  std::fflush(stderr);
  shown_ = true;
}

void StageProgress::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

// Every second on a terminal, where a short line ("solve fc7: 12 s") is rewritten in
// place (the start line can be wider than the terminal); every 5 s otherwise, a new line.
void StageProgress::tick() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto period = std::chrono::milliseconds(tty_ ? 1000 : 5000);
  while (!cv_.wait_for(lock, period, [this] { return done_; })) {
    if (!shown_) show();  // estimated short, but running on
    const std::string t = format_seconds(now_s() - start_);
    if (tty_) {
      std::fprintf(stderr, "\r%s: %s ", label_.c_str(), t.c_str());
      open_line_ = true;
    } else {
      std::fprintf(stderr, "%s %s so far\n", what_.c_str(), t.c_str());
    }
    std::fflush(stderr);
  }
}

double StageProgress::finish() {
  stop();  // the ticker has stopped: its fields need no lock from here
  const double s = now_s() - start_;
  rates_.observe(flops_, s);
  if (shown_) {
    const std::string t = format_seconds(s);
    if (tty_)
      std::fprintf(stderr, "\r%s: %s  \n", label_.c_str(), t.c_str());
    else
      std::fprintf(stderr, "%s %s\n", what_.c_str(), t.c_str());
    std::fflush(stderr);
  }
  open_line_ = false;
  return s;
}

}  // namespace dalr
