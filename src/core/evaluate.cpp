#include "dalr/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "common/finite.hpp"
#include "core/job_common.hpp"
#include "core/stream.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/atomic_file.hpp"

namespace dalr {

namespace {

void check_outputs(const EvaluateOptions& o) {
  for (const auto& [option, path] :
       {std::pair<const char*, const std::string&>{"--report", o.report},
        {"--predictions", o.predictions}})
    if (!path.empty() && (same_file(path, o.model) || same_file(path, o.compare)))
      throw Error(std::string(option) + " " + path + " is an input: refusing to overwrite it");
  if (!o.report.empty() && !o.predictions.empty() && same_file(o.report, o.predictions))
    throw Error("--report and --predictions name the same file " + o.report);
}

// A CSV field: quoted (RFC 4180) when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

// --predictions: one row per image, in the order the images were read.
class Predictions {
 public:
  explicit Predictions(bool on) : on_(on) {
    if (on_)
      csv_ = "path,true_class,true_index,predicted_index,predicted_class,softmax_probability\n";
  }
  // Column j of `logits` is image `name` with label `label` (-1: unknown); `names` are
  // the outputs' class names where known (BatchSource::label_names).
  template <typename T>
  void add(const Matrix<T>& logits, int64_t j, int64_t best, const std::string& name, int64_t label,
           const std::vector<std::string>& names) {
    if (!on_) return;
    double sum = 0;  // softmax of the best class: 1 / sum exp(l_i - l_best), l_best the max
    for (int64_t i = 0; i < logits.rows; ++i)
      sum += std::exp(static_cast<double>(logits(i, j)) - static_cast<double>(logits(best, j)));
    auto name_of = [&](int64_t k) {
      return k >= 0 && k < static_cast<int64_t>(names.size()) ? names[static_cast<size_t>(k)]
                                                              : std::string();
    };
    char prob[32];
    std::snprintf(prob, sizeof prob, "%.9g", 1.0 / sum);
    csv_ += csv_field(name) + "," + csv_field(name_of(label)) + "," + std::to_string(label) + "," +
            std::to_string(best) + "," + csv_field(name_of(best)) + "," + prob + "\n";
  }
  const std::string& text() const { return csv_; }

 private:
  bool on_;
  std::string csv_;
};

template <typename T>
EvaluateResult run(const EvaluateOptions& o, Backend& backend) {
  check_batch_and_workers(o.batch, o.workers);
  check_outputs(o);
  SafetensorsFile model(o.model);
  const Arch arch = load_arch(model, o.arch, o.input_size);
  const std::unique_ptr<Forward<T>> fwd = make_forward<T>(backend, arch, model);
  const ModelClasses classes = model_classes(model, arch);
  std::unique_ptr<SafetensorsFile> other_file;
  std::unique_ptr<Forward<T>> other;
  if (!o.compare.empty()) {
    other_file = std::make_unique<SafetensorsFile>(o.compare);
    const Arch other_arch = load_arch(*other_file, o.arch, o.input_size);
    other = make_forward<T>(backend, other_arch, *other_file);
    const ModelClasses other_classes = model_classes(*other_file, other_arch);
    if (!classes.names.empty() && !other_classes.names.empty() &&
        classes.names != other_classes.names)
      throw Error(o.model + " and " + o.compare +
                  " name their classes differently (metadata dalr.classes): their predictions "
                  "cannot be compared");
  }
  DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet, &classes};
  std::unique_ptr<BatchSource> src = open_data(d, arch.input);
  const std::vector<std::string> label_names = src->label_names();
  Predictions predictions(!o.predictions.empty());
  const int64_t c = src->channels(), h = src->height(), w = src->width();
  HostBatch<T> in(*src, o.batch);
  std::vector<int64_t> labels;
  EvaluateResult r;
  int64_t hit1 = 0, hit5 = 0, agree = 0;
  Progress progress("evaluate", src->size(), o.quiet);
  for (int64_t got; (got = in.next(*src, &labels)) > 0;) {
    const Matrix<T> logits = fwd->run(in.data(), got, c, h, w);
    Matrix<T> logits2;
    if (other) logits2 = other->run(in.data(), got, c, h, w);
    // A NaN or Inf score would make the ranking, and so the accuracy, meaningless.
    try {
      check_finite(logits.ptr(), logits.rows, got, logits.rows, r.images, o.model + ": output");
      if (other)
        check_finite(logits2.ptr(), logits2.rows, got, logits2.rows, r.images,
                     o.compare + ": output");
    } catch (const Error& e) {
      throw with_precision_hint(e, backend.precision());
    }
    const std::vector<std::string> names =
        o.predictions.empty() ? std::vector<std::string>() : src->last_names();
    for (int64_t j = 0; j < got; ++j) {
      const std::vector<int64_t> best = top_k(logits, j, 5);
      const int64_t label = labels.empty() ? -1 : labels[static_cast<size_t>(j)];
      if (!names.empty())
        predictions.add(logits, j, best[0], names[static_cast<size_t>(j)], label, label_names);
      if (label >= 0) {
        ++r.labelled;
        hit1 += best[0] == label;
        hit5 += std::find(best.begin(), best.end(), label) != best.end();
      }
      if (other) agree += top_k(logits2, j, 1)[0] == best[0];
    }
    r.images += got;
    progress.add(got);
  }
  progress.finish();
  if (r.images == 0)
    throw Error("no readable images in " + o.data +
                (src->skipped() ? " (first failure: " + src->first_skip_reason() + ")" : ""));
  r.top1 = r.labelled ? double(hit1) / r.labelled : 0;
  r.top5 = r.labelled ? double(hit5) / r.labelled : 0;
  if (other) r.agreement = double(agree) / r.images;
  if (!src->label_warning().empty()) r.warnings.push_back(src->label_warning());

  nlohmann::json j = {{"model", o.model},
                      {"data", o.data},
                      {"images", r.images},
                      {"labelled", r.labelled},
                      {"precision", precision_name(backend.precision())},
                      {"device", backend.name()}};
  if (r.labelled) j["top1"] = r.top1, j["top5"] = r.top5;
  if (other) j["compare"] = o.compare, j["agreement"] = r.agreement;
  j["skipped"] = src->skipped();
  if (!r.warnings.empty()) j["warnings"] = r.warnings;
  if (!o.predictions.empty()) j["predictions"] = o.predictions;
  r.report_json = j.dump(2);
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << o.model << " on " << r.images << " images";
  if (r.labelled)
    s << ": top-1 " << 100 * r.top1 << "%, top-5 " << 100 * r.top5 << "%";
  else
    s << " (no labels: a .npy source)";
  if (other) s << "; agreement with " << o.compare << ": " << 100 * r.agreement << "%";
  s << "\n";
  if (src->skipped())
    s << "skipped " << src->skipped()
      << " images that could not be read (first: " << src->first_skip_reason() << ")\n";
  for (const std::string& w : r.warnings) s << "warning: " << w << "\n";
  r.summary = s.str();
  std::vector<std::unique_ptr<AtomicFile>> files;  // committed together
  if (!o.report.empty()) files.push_back(stage_text_file(o.report, r.report_json + "\n"));
  if (!o.predictions.empty()) files.push_back(stage_text_file(o.predictions, predictions.text()));
  commit_all(files);
  return r;
}

}  // namespace

EvaluateResult evaluate(const EvaluateOptions& o, Backend& backend) {
  if (o.model.empty()) throw Error("--model is required");
  return with_precision(backend.precision(),
                        [&](auto tag) { return run<decltype(tag)>(o, backend); });
}

}  // namespace dalr
