#include "dalr/evaluate.hpp"

#include <algorithm>
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

template <typename T>
EvaluateResult run(const EvaluateOptions& o, Backend& backend) {
  check_batch_and_workers(o.batch, o.workers);
  if (!o.report.empty() && (same_file(o.report, o.model) || same_file(o.report, o.compare)))
    throw Error("--report " + o.report + " is an input: refusing to overwrite it");
  SafetensorsFile model(o.model);
  const Arch arch = load_arch(model, o.arch);
  const std::unique_ptr<Forward<T>> fwd = make_forward<T>(backend, arch, model);
  std::unique_ptr<SafetensorsFile> other_file;
  std::unique_ptr<Forward<T>> other;
  if (!o.compare.empty()) {
    other_file = std::make_unique<SafetensorsFile>(o.compare);
    other = make_forward<T>(backend, load_arch(*other_file, o.arch), *other_file);
  }
  DataOptions d{o.data, o.workers, o.limit, o.shuffle, o.seed, o.batch, o.quiet};
  std::unique_ptr<BatchSource> src = open_data(d, arch.input);
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
    for (int64_t j = 0; j < got; ++j) {
      const std::vector<int64_t> best = top_k(logits, j, 5);
      const int64_t label = labels.empty() ? -1 : labels[static_cast<size_t>(j)];
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

  nlohmann::json j = {{"model", o.model},
                      {"data", o.data},
                      {"images", r.images},
                      {"labelled", r.labelled},
                      {"precision", precision_name(backend.precision())},
                      {"device", backend.name()}};
  if (r.labelled) j["top1"] = r.top1, j["top5"] = r.top5;
  if (other) j["compare"] = o.compare, j["agreement"] = r.agreement;
  j["skipped"] = src->skipped();
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
  r.summary = s.str();
  if (!o.report.empty()) write_text_file(o.report, r.report_json + "\n");
  return r;
}

}  // namespace

EvaluateResult evaluate(const EvaluateOptions& o, Backend& backend) {
  if (o.model.empty()) throw Error("--model is required");
  return with_precision(backend.precision(),
                        [&](auto tag) { return run<decltype(tag)>(o, backend); });
}

}  // namespace dalr
