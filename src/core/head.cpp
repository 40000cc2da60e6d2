#include "core/head.hpp"

#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/safetensors.hpp"

namespace dalr {

std::unique_ptr<Backend> scoring_backend(Precision precision) {
  return make_cpu_backend(act_storage(precision) == ActStorage::Fp32 ? Precision::Fp32 : precision);
}

Features cache_features(const DataOptions& d, const std::string& layer, const std::string& option,
                        const Arch& arch, const SafetensorsFile& model, Backend& backend,
                        std::vector<std::string>& warnings) {
  const std::unique_ptr<Forward<float>> fwd = make_forward<float>(backend, arch, model);
  const ModelClasses classes = model_classes(model, arch);
  DataOptions labelled = d;
  labelled.classes = &classes;  // the labels are scored: folders map to the model's outputs
  std::unique_ptr<BatchSource> src = open_data(labelled, arch.input);
  if (!src->label_warning().empty()) warnings.push_back(option + ": " + src->label_warning());
  const int64_t c = src->channels(), h = src->height(), w = src->width();
  HostBatch<float> buf(*src, d.batch);
  std::vector<int64_t> labels;
  Features f;
  Progress progress(option.substr(2) + " features", src->size(), d.quiet);
  for (int64_t got; (got = buf.next(*src, &labels)) > 0;) {
    const Matrix<float> x = fwd->run(buf.data(), got, c, h, w, layer);
    f.n = x.rows;
    f.x.insert(f.x.end(), x.data.begin(), x.data.end());
    for (int64_t j = 0; j < got; ++j)
      f.labels.push_back(labels.empty() ? -1 : labels[static_cast<size_t>(j)]);
    f.chunks.push_back(got);
    f.count += got;
    progress.add(got);
  }
  progress.finish();
  if (f.count == 0)
    throw Error("no readable images in " + d.data +
                (src->skipped() ? " (first failure: " + src->first_skip_reason() + ")" : ""));
  if (std::all_of(f.labels.begin(), f.labels.end(), [](int64_t l) { return l < 0; }))
    throw Error(option + " " + d.data +
                " has no labels: give an image folder with class subfolders");
  if (src->skipped())
    warnings.push_back("skipped " + std::to_string(src->skipped()) + " " + option.substr(2) +
                       " images (first: " + src->first_skip_reason() + ")");
  return f;
}

template <typename T>
std::vector<float> row_major_f(const Matrix<T>& m) {
  const std::vector<T> r = to_row_major(m);
  return std::vector<float>(r.begin(), r.end());
}

template <typename T>
Substitution<float> factored_substitution(const std::string& layer, const Factors<T>& f) {
  const int64_t k = f.rank, n = f.b.cols, m = f.a.rows;
  Substitution<float> s;
  s.layer = layer;
  s.parts.push_back({n, k, row_major_f(f.b), {}});
  s.parts.push_back({k, m, row_major_f(f.a), std::vector<float>(f.bias.begin(), f.bias.end())});
  return s;
}

template <typename T>
std::vector<Substitution<float>> pruned_substitutions(const std::string& layer, const Factors<T>& f,
                                                      int64_t m, const NextLayer& next) {
  const int64_t k = f.rank, n = f.b.cols;
  std::vector<float> cols = kept_columns(next.w, next.rows, m, f.kept_units);
  std::vector<Substitution<float>> s(2);
  s[0].layer = layer;
  s[0].parts.push_back({n, k, row_major_f(f.b), std::vector<float>(f.bias.begin(), f.bias.end())});
  s[1].layer = next.name;
  s[1].parts.push_back({k, next.rows, std::move(cols), next.b});
  return s;
}

template Substitution<float> factored_substitution(const std::string&, const Factors<float>&);
template Substitution<float> factored_substitution(const std::string&, const Factors<double>&);
template std::vector<Substitution<float>> pruned_substitutions(const std::string&,
                                                               const Factors<float>&, int64_t,
                                                               const NextLayer&);
template std::vector<Substitution<float>> pruned_substitutions(const std::string&,
                                                               const Factors<double>&, int64_t,
                                                               const NextLayer&);

}  // namespace dalr
