#pragma once
// Image input for the streaming pipeline: an image folder (one subfolder per class, as
// torchvision's ImageFolder) decoded by a pool of threads, or an already preprocessed
// N x C x H x W .npy file. Both come out through BatchSource, in NCHW float batches.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/input_spec.hpp"

namespace dalr {

struct Sample {
  std::string path;
  int64_t label;
};

// Subfolders of `dir` sorted by name (their bytes, as Python's sorted() on str) give
// label 0, 1, ...; files in each sorted by name. Accepted: .jpg .jpeg .png (any case);
// other files are ignored. Throws dalr::Error if `dir` is not a folder or holds no
// image. class_names (may be null) gets the subfolders.
std::vector<Sample> list_image_folder(const std::string& dir,
                                      std::vector<std::string>* class_names);

// The model's side of the labels: its class names (the metadata's `dalr.classes`, one
// per output; empty when it has none) and its number of outputs.
struct ModelClasses {
  std::vector<std::string> names;
  int64_t outputs = 0;
};

// `dalr.classes`: a JSON array of `outputs` distinct non-empty strings. Throws
// dalr::Error naming `where` (the model file) otherwise.
std::vector<std::string> parse_class_names(const std::string& json, int64_t outputs,
                                           const std::string& where);

// How the class folders of an image folder map to a model's outputs: the one rule that
// evaluate, sweep --test and compress --val share (and tools/dalr_format.py copies).
struct ClassMap {
  std::vector<int64_t> label;      // per folder (sorted by name): the output it holds
  std::vector<std::string> names;  // per output, its name where known (for messages)
  std::string warning;             // set when folders map by position
};

// With class names, by name: a folder whose name is not a class is an error naming it;
// a subset of the classes is fine. Without, folder i (sorted by name) is output i:
// more folders than outputs is an error, and `warning` says that the order decides.
ClassMap map_class_folders(const std::string& dir, const std::vector<std::string>& folders,
                           const ModelClasses& model);

// Decodes a JPEG or PNG (chosen by content, not by name) and writes
// p.channels x p.crop[0] x p.crop[1] floats (CHW), preprocessed as InputSpec says. The
// resize is PIL's bilinear (a triangle filter widened when shrinking, so large
// reductions average instead of aliasing), computed in float without rounding to 8 bits.
// Grey is replicated to 3 channels; colour becomes 1 channel by ITU-R 601 luma. Throws
// dalr::Error naming the file, or if p is not valid (validate) or its channels are not
// 1 or 3, or the image is smaller than the crop.
void decode_and_preprocess(const std::string& path, const InputSpec& p, float* out);

class BatchSource {
 public:
  virtual ~BatchSource();
  virtual int64_t size() const = 0;  // images this source yields in all
  // The position in the whole list of this source's first image: 0, unless the source is
  // one process's share of the list (open_images' rank and ranks).
  virtual int64_t first_index() const { return 0; }
  // Writes up to max_batch images (NCHW) to `out` and their labels to `labels` (may be
  // null; -1 where unknown). Returns the number written; 0 at the end. `out` is the
  // caller's memory (any host memory, pinned included) for max_batch x C x H x W floats,
  // which the caller hands to the forward pass as it is (core/stream.hpp's HostBatch);
  // no pointer to it is kept after the call. An image that fails to decode throws
  // dalr::Error (naming the file) when its turn comes, and again on every later call.
  virtual int64_t next(float* out, int64_t max_batch, std::vector<int64_t>* labels) = 0;
  virtual int64_t channels() const = 0;
  virtual int64_t height() const = 0;
  virtual int64_t width() const = 0;
  // Images that could not be read and were skipped (only with skip_bad), and why the
  // first one failed.
  virtual int64_t skipped() const { return 0; }
  virtual std::string first_skip_reason() const { return {}; }
  // What the labels mean (an image folder opened with a model's classes; empty
  // otherwise): ClassMap::names and ClassMap::warning.
  virtual std::vector<std::string> label_names() const { return {}; }
  virtual std::string label_warning() const { return {}; }
  // The images the last next() wrote, in order: their paths (a .npy: FILE[row]).
  virtual std::vector<std::string> last_names() const { return {}; }
};

// An image folder decoded by `workers` threads into a ring that runs ahead of the
// consumer. The list is shuffled (if asked, deterministically from `seed`) and then
// cut to `limit` images (limit <= 0: all); images come out in that list's order
// whichever worker decoded them, so the batches do not depend on `workers`. An image
// that cannot be read (corrupt, truncated, not an image, smaller than the crop) stops
// the source with an error naming it, or with `skip_bad` is left out and counted.
// With `classes` the labels are the model's outputs (map_class_folders); without, the
// folders' sorted positions, unchecked (a statistics pass reads no label).
// Several processes (mpirun): the source yields only the rank-th of `ranks` contiguous
// parts of that list (dalr::share_of), which every rank computes alike.
std::unique_ptr<BatchSource> open_images(const std::string& dir, const InputSpec& p, int workers,
                                         int64_t limit, bool shuffle, uint64_t seed,
                                         bool skip_bad = false,
                                         const ModelClasses* classes = nullptr, int rank = 0,
                                         int ranks = 1);

// An N x C x H x W .npy (float16/32/64), already preprocessed; labels are -1. rank and
// ranks: as open_images'.
std::unique_ptr<BatchSource> open_npy_images(const std::string& path, int64_t limit, int rank = 0,
                                             int ranks = 1);

}  // namespace dalr
