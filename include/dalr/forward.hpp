#pragma once
// The forward pass of an Arch, as both backends offer it (Backend::forward_f32/f64;
// the CPU's is src/cpu/forward.hpp, the GPU's dalr/cudnn_forward.hpp). Images come in as a batch of
// NCHW tensors (row-major, one image after another), already preprocessed (InputSpec's scale, mean
// and std applied); activations leave as a column-major (features x batch) matrix,
// one sample per column, the layout the statistics and solvers take.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/matrix.hpp"
#include "dalr/precision.hpp"

namespace dalr {

class SafetensorsFile;

// ActStorage: how a float forward pass stores its activations (dalr/precision.hpp,
// act_storage(Precision)).
const char* act_storage_name(ActStorage s);  // "fp32", "fp16", "bf16"
// x rounded to the storage format and widened back (x itself for Fp32).
float round_to_storage(float x, ActStorage s);
// v with every value rounded to the storage format (v itself for Fp32).
std::vector<float> rounded_to_storage(std::vector<float> v, ActStorage s);

// A linear layer of the arch replaced, for one run, by what a compressed model file
// holds in its place (compress's output): `parts` run in order instead of `layer`, each
// a linear layer with its tensors as the file stores them (out x in row-major weight,
// bias empty or out; 16-bit storage rounds the weights as a loaded model's). A
// factorisation is two parts (NAME.0: B, no bias; NAME.1: A with the bias); a pruning
// is one part (the kept rows and their biases) plus a substitution of the next linear
// layer (its kept columns). A conv layer's substitution is its factorisation's two parts:
// NAME.0, k x (c_in kh kw) (the k x c_in x kh x kw conv weight; the layer's kernel,
// stride, padding and dilation, no bias), and NAME.1, c_out x k (a 1x1 conv) with the
// bias. The shapes must chain (checked with the arch's).
template <typename T>
struct Substitution {
  struct Part {
    int64_t in = 0, out = 0;
    std::vector<T> weight, bias;
  };
  std::string layer;
  std::vector<Part> parts;
};

// What both forward passes (CPU: CpuForward, GPU: cuda::CudnnForward) offer, so that
// the job code runs on either through Backend::forward.
template <typename T>
class Forward {
 public:
  using Tap = std::function<void(const std::string& layer, const T* x, int64_t n, int64_t batch)>;
  // A tap on the device path: `x` is a DEVICE pointer to the n x batch block (ld n) and
  // `stream` the producer's cudaStream_t (as void*, so this header needs no CUDA). Both
  // are valid during the call only: the work that makes x is queued on `stream`, not
  // finished, and work queued there after the call may overwrite x. So a consumer
  // queues its reads of x on `stream` during the call (e.g. a copy into its own buffer).
  using DeviceTap = std::function<void(const std::string& layer, const T* x, int64_t n,
                                       int64_t batch, void* stream)>;
  virtual ~Forward() = default;
  virtual const Arch& arch() const = 0;
  virtual Matrix<T> run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                        const std::string& stop_at_layer_input = "") const = 0;
  virtual void run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                        const std::vector<std::string>& taps, const Tap& tap) const = 0;
  // The network from layer `layer` on: `input` is that layer's input (n x batch,
  // column-major, as run(..., layer) returns it); returns the network's output
  // (classes x batch). With `after`, `input` is the layer's output and only the layers
  // after it run. With `subs`, the named linear or conv layers are replaced as a compressed
  // model file replaces them, so a candidate is scored by the pass that scores the
  // written model (sweep, compress --max-drop on cached features).
  virtual Matrix<T> run_from(const std::string& layer, const T* input, int64_t batch,
                             bool after = false,
                             const std::vector<Substitution<T>>& subs = {}) const;
  // The device path of run_taps (opt in: false, and run_taps_device throws, unless a GPU
  // forward pass overrides them). `input` is a host batch as for run_taps, reusable when
  // the call returns; the call returns once the pass is queued, without waiting for the
  // GPU, so the caller can prepare the next batch while it runs.
  virtual bool supports_device_taps() const { return false; }
  virtual void run_taps_device(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                               const std::vector<std::string>& taps, const DeviceTap& tap) const;
};

template <typename T>
void Forward<T>::run_taps_device(const T*, int64_t, int64_t, int64_t, int64_t,
                                 const std::vector<std::string>&, const DeviceTap&) const {
  throw Error("device taps are not supported on this backend (use run_taps)");
}

template <typename T>
Matrix<T> Forward<T>::run_from(const std::string&, const T*, int64_t, bool,
                               const std::vector<Substitution<T>>&) const {
  throw Error("run_from is not supported on this backend (use the CPU forward pass)");
}

}  // namespace dalr
