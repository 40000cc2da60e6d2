#include "core/sweep_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/atomic_file.hpp"

namespace dalr {

namespace {

std::string pct(double v, int decimals = 2) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << 100.0 * v << "%";
  return os.str();
}

std::string num(double v, int prec = 6) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

std::vector<std::string> methods_of(const SweepResult& r) {
  std::vector<std::string> out;
  for (const auto& p : r.points)
    if (std::find(out.begin(), out.end(), p.method) == out.end()) out.push_back(p.method);
  return out;
}

std::vector<int64_t> ranks_of(const SweepResult& r) {
  std::vector<int64_t> out;
  for (const auto& p : r.points)
    if (std::find(out.begin(), out.end(), p.rank) == out.end()) out.push_back(p.rank);
  return out;
}

const SweepPoint* find_point(const SweepResult& r, const std::string& method, int64_t rank) {
  for (const auto& p : r.points)
    if (p.method == method && p.rank == rank) return &p;
  return nullptr;
}

// The factorisation's kept fraction at rank k: the column header of the paper's tables.
double column_fraction(const SweepResult& r, int64_t k) {
  return double(k * (r.m + r.n)) / double(r.m * r.n);
}

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, double* step_out) {
  const double span = std::max(hi - lo, 1e-12), raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (f * mag >= raw) {
      step = f * mag;
      break;
    }
  std::vector<double> t;
  const double first = std::floor(lo / step + 1e-9) * step,
               last = std::ceil(hi / step - 1e-9) * step;
  for (double v = first; v <= last + step * 1e-9; v += step) t.push_back(v);
  *step_out = step;
  return t;
}

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                          "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

// A plot frame: axes, ticks, labels, title; maps data to pixels.
struct Plot {
  Plot(double xa, double xb, double ya, double yb) : x0(xa), x1(xb), y0(ya), y1(yb) {}
  double x0, x1, y0, y1;  // data range
  double left = 70, right = 210, top = 40, bottom = 55, width = 760, height = 440;
  std::ostringstream svg;

  double px(double x) const { return left + (x - x0) / (x1 - x0) * (width - left - right); }
  double py(double y) const {
    return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
  }

  void begin(const std::string& title, const std::string& xlabel, const std::string& ylabel,
             const std::vector<double>& xt, const std::vector<double>& yt) {
    svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
        << "\" viewBox=\"0 0 " << width << " " << height
        << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
        << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height
        << "\" fill=\"white\"/>\n"
        << "<text x=\"" << (left + width - right) / 2 << "\" y=\"22\" text-anchor=\"middle\" "
        << "font-size=\"14\">" << xml_escape(title) << "</text>\n";
    const double bx = px(x0), by = py(y0), ex = px(x1), ey = py(y1);
    for (double v : xt) {
      svg << "<line x1=\"" << px(v) << "\" y1=\"" << by << "\" x2=\"" << px(v) << "\" y2=\"" << ey
          << "\" stroke=\"#e0e0e0\"/>\n"
          << "<text x=\"" << px(v) << "\" y=\"" << by + 16 << "\" text-anchor=\"middle\">"
          << num(v, 4) << "</text>\n";
    }
    for (double v : yt) {
      svg << "<line x1=\"" << bx << "\" y1=\"" << py(v) << "\" x2=\"" << ex << "\" y2=\"" << py(v)
          << "\" stroke=\"#e0e0e0\"/>\n"
          << "<text x=\"" << bx - 6 << "\" y=\"" << py(v) + 4 << "\" text-anchor=\"end\">"
          << num(v, 4) << "</text>\n";
    }
    svg << "<line x1=\"" << bx << "\" y1=\"" << by << "\" x2=\"" << ex << "\" y2=\"" << by
        << "\" stroke=\"black\"/>\n"
        << "<line x1=\"" << bx << "\" y1=\"" << by << "\" x2=\"" << bx << "\" y2=\"" << ey
        << "\" stroke=\"black\"/>\n"
        << "<text x=\"" << (bx + ex) / 2 << "\" y=\"" << height - 12 << "\" text-anchor=\"middle\">"
        << xml_escape(xlabel) << "</text>\n"
        << "<text x=\"16\" y=\"" << (by + ey) / 2
        << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " << (by + ey) / 2 << ")\">"
        << xml_escape(ylabel) << "</text>\n";
  }
  void legend(size_t i, const std::string& label, const std::string& colour, bool dashed) {
    const double lx = width - right + 15, ly = top + 10 + 20 * double(i);
    svg << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
        << "\" stroke=\"" << colour << "\" stroke-width=\"2\""
        << (dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>\n"
        << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">" << xml_escape(label)
        << "</text>\n";
  }
  std::string end() {
    svg << "</svg>\n";
    return svg.str();
  }
};

std::string csv(const SweepResult& r) {
  std::ostringstream s;
  s << "method,rank,kept,kept_fraction,skipped,top1,top5,agreement,error_rel,error_abs,"
       "energy_kept,lambda,solve_s,head_s,note\n";
  for (const auto& p : r.points)
    s << p.method << "," << p.rank << "," << p.kept << "," << num(p.kept_fraction, 9) << ","
      << (p.skipped ? 1 : 0) << "," << num(p.top1, 9) << "," << num(p.top5, 9) << ","
      << num(p.agreement, 9) << "," << num(p.error_rel, 9) << "," << num(p.error_abs, 9) << ","
      << num(p.energy_kept, 9) << "," << num(p.lambda, 9) << "," << num(p.solve_s, 4) << ","
      << num(p.head_s, 4) << ",\"" << p.note << "\"\n";
  return s.str();
}

std::string markdown(const SweepOptions& o, const SweepResult& r) {
  std::ostringstream s;
  s << "# dalr-gpu sweep: " << o.model << ", layer " << o.layer << "\n\n" << sweep_table(r);
  s << "\n## Every point\n\n"
    << "| method | rank | kept | weights kept | top-1 | top-5 | agreement | train error "
       "(relative) | energy kept |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& p : r.points) {
    s << "| " << p.method << " | " << p.rank << " | " << p.kept << " | " << pct(p.kept_fraction, 1)
      << " | ";
    if (p.skipped)
      s << "skipped: " << p.note << " | | | | |\n";
    else
      s << pct(p.top1) << " | " << pct(p.top5) << " | " << pct(p.agreement) << " | "
        << num(p.error_rel, 4) << " | " << pct(p.energy_kept, 1) << " |\n";
  }
  return s.str();
}

std::string json_text(const SweepOptions& o, const SweepResult& r) {
  nlohmann::json j;
  j["model"] = o.model;
  j["layer"] = {{"name", o.layer},
                {"m", r.m},
                {"n", r.n},
                {"kind", r.conv ? "conv" : "fc"},
                {"positions", r.positions},
                {"flops_before", r.positions * r.m * r.n}};
  j["train"] = {
      {"data", o.data}, {"stats", o.stats_in}, {"samples", r.train_samples}, {"limit", o.limit}};
  j["test"] = {{"data", o.test}, {"images", r.test_images}, {"limit", o.test_limit}};
  j["shuffle"] = o.shuffle;
  j["seed"] = o.seed;
  j["uncompressed"] = {{"top1", r.base_top1}, {"top5", r.base_top5}};
  j["device"] = r.device;
  j["precision"] = r.precision;
  j["timing_s"] = {
      {"statistics", r.stats_s}, {"test_features", r.features_s}, {"total", r.total_s}};
  j["warnings"] = r.warnings;
  j["points"] = nlohmann::json::array();
  for (const auto& p : r.points) {
    nlohmann::json q = {{"method", p.method},
                        {"rank", p.rank},
                        {"kept", p.kept},
                        {"kept_fraction", p.kept_fraction},
                        {"skipped", p.skipped}};
    if (!p.skipped && r.conv)  // a conv layer's multiply-adds per image
      q["flops_after"] = r.positions * p.kept * (r.m + r.n);
    if (p.skipped) {
      q["note"] = p.note;
    } else {
      q["top1"] = p.top1;
      q["top5"] = p.top5;
      q["agreement"] = p.agreement;
      q["error_train"] = {{"rel", p.error_rel}, {"abs", p.error_abs}};
      q["energy_kept"] = p.energy_kept;
      q["lambda"] = p.lambda;
      q["timing_s"] = {{"solve", p.solve_s}, {"head", p.head_s}};
    }
    j["points"].push_back(q);
  }
  return j.dump(2) + "\n";
}

}  // namespace

std::string sweep_table(const SweepResult& r) {
  // Whether a rank is skipped depends on k, m and n only: one note per skipped rank,
  // and no column for it.
  std::vector<int64_t> ranks;
  std::string notes;
  for (int64_t k : ranks_of(r)) {
    const SweepPoint* p = find_point(r, methods_of(r).front(), k);
    if (p && p->skipped)
      notes += "k=" + std::to_string(k) + " skipped: " + p->note + "\n";
    else
      ranks.push_back(k);
  }
  std::ostringstream s;
  s << "layer " << r.m << " x " << r.n
    << (r.conv ? " (conv: c_out x c_in kh kw at " + std::to_string(r.positions) +
                     " positions; the weights kept are the multiply-adds kept)"
               : std::string())
    << ", " << r.train_samples << " training samples, " << r.test_images
    << " test images; uncompressed top-1 " << pct(r.base_top1) << ", top-5 " << pct(r.base_top5)
    << "\n\n| method |";
  for (int64_t k : ranks) s << " k=" << k << " (" << pct(column_fraction(r, k), 1) << ") |";
  s << "\n| --- |";
  for (size_t i = 0; i < ranks.size(); ++i) s << " --- |";
  s << "\n";
  for (const auto& m : methods_of(r)) {
    s << "| " << m << " |";
    for (int64_t k : ranks) s << " " << pct(find_point(r, m, k)->top1) << " |";
    s << "\n";
  }
  if (!notes.empty()) s << "\n" << notes;
  return s.str();
}

std::vector<std::string> sweep_output_paths(const std::string& prefix) {
  return {prefix + ".csv", prefix + ".md", prefix + ".json", prefix + ".svg",
          prefix + "-spectrum.svg"};
}

std::string sweep_accuracy_svg(const SweepOptions& o, const SweepResult& r) {
  double xmax = 0, ymin = 100 * r.base_top1;  // the x axis ends past the largest point
  for (const auto& p : r.points)
    if (!p.skipped) {
      xmax = std::max(xmax, 100 * p.kept_fraction);
      ymin = std::min(ymin, 100 * p.top1);
    }
  double xs, ys;
  std::vector<double> xt = nice_ticks(0, xmax > 0 ? xmax : 1, &xs);
  std::vector<double> yt = nice_ticks(std::max(0.0, ymin - 2), 100, &ys);
  Plot pl(xt.front(), xt.back(), yt.front(), yt.back());
  pl.begin("Test top-1 accuracy after compressing " + o.layer + " (" + std::to_string(r.m) + " x " +
               std::to_string(r.n) + ")",
           "weights of " + o.layer + " kept (%)", "test top-1 accuracy (%)", xt, yt);
  const double base = 100 * r.base_top1;
  pl.svg << "<line x1=\"" << pl.px(pl.x0) << "\" y1=\"" << pl.py(base) << "\" x2=\"" << pl.px(pl.x1)
         << "\" y2=\"" << pl.py(base) << "\" stroke=\"black\" stroke-dasharray=\"6 4\"/>\n";
  const std::vector<std::string> methods = methods_of(r);
  for (size_t i = 0; i < methods.size(); ++i) {
    const std::string colour = kColours[i % 8];
    std::ostringstream pts, dots;
    for (const auto& p : r.points)
      if (p.method == methods[i] && !p.skipped) {
        const double x = pl.px(100 * p.kept_fraction), y = pl.py(100 * p.top1);
        pts << (pts.tellp() > 0 ? " " : "") << num(x, 7) << "," << num(y, 7);
        dots << "<circle cx=\"" << num(x, 7) << "\" cy=\"" << num(y, 7) << "\" r=\"3\" fill=\""
             << colour << "\"/>\n";
      }
    pl.svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\""
           << pts.str() << "\"/>\n"
           << dots.str();
    pl.legend(i, methods[i], colour, false);
  }
  pl.legend(methods.size(), "uncompressed " + pct(r.base_top1, 1), "black", true);
  return pl.end();
}

std::string sweep_spectrum_svg(const SweepOptions& o, const SweepResult& r) {
  size_t len = 1;
  for (const auto& s : r.spectra) len = std::max(len, s.second.size());
  double xs, ys;
  std::vector<double> xt = nice_ticks(0, double(len), &xs);
  std::vector<double> yt = nice_ticks(0, 100, &ys);
  Plot pl(xt.front(), xt.back(), yt.front(), yt.back());
  pl.begin("Spectral energy kept by rank, " + o.layer, "rank k", "energy kept (%)", xt, yt);
  for (int64_t k : ranks_of(r))
    if (k <= static_cast<int64_t>(len))
      pl.svg << "<line x1=\"" << pl.px(double(k)) << "\" y1=\"" << pl.py(0) << "\" x2=\""
             << pl.px(double(k)) << "\" y2=\"" << pl.py(100)
             << "\" stroke=\"#999999\" stroke-dasharray=\"2 3\"/>\n";
  for (size_t i = 0; i < r.spectra.size(); ++i) {
    const auto& [method, spec] = r.spectra[i];
    double total = 0;
    for (double v : spec) total += std::max(v, 0.0);
    std::ostringstream pts;
    pts << num(pl.px(0), 7) << "," << num(pl.py(0), 7);
    double acc = 0;
    for (size_t j = 0; j < spec.size(); ++j) {
      acc += std::max(spec[j], 0.0);
      pts << " " << num(pl.px(double(j + 1)), 7) << ","
          << num(pl.py(total > 0 ? 100 * acc / total : 0), 7);
    }
    const std::string colour = kColours[i % 8];
    pl.svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\""
           << pts.str() << "\"/>\n";
    pl.legend(i, method, colour, false);
  }
  return pl.end();
}

void write_sweep_files(const SweepOptions& o, const SweepResult& r) {
  const std::vector<std::string> p = sweep_output_paths(o.out);
  std::vector<std::unique_ptr<AtomicFile>> files;  // committed together (commit_all)
  files.push_back(stage_text_file(p[0], csv(r)));
  files.push_back(stage_text_file(p[1], markdown(o, r)));
  files.push_back(stage_text_file(p[2], json_text(o, r)));
  files.push_back(stage_text_file(p[3], sweep_accuracy_svg(o, r)));
  files.push_back(stage_text_file(p[4], sweep_spectrum_svg(o, r)));
  commit_all(files);
}

}  // namespace dalr
