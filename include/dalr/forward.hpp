#pragma once
// The forward pass of an Arch on the CPU: the oracle the GPU pipeline is tested
// against, and the engine for --device cpu. Images come in as a batch of NCHW tensors
// (row-major, one image after another), already preprocessed (InputSpec's scale, mean
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

namespace dalr {

class SafetensorsFile;

// How a float forward pass stores its activations between layers (--precision).
// Fp32: as computed. Fp16 / Bf16: the input, the conv and linear weights and every
// layer's output are rounded to that format (nearest, ties to even); the arithmetic
// inside a layer stays fp32, and biases and batchnorm's scale and shift stay fp32. A
// conv or linear layer with a bias is two roundings: its product, then product + bias.
// On the GPU this is the tensor-core path (16-bit data, fp32 accumulation,
// channels-last between convolutions); on the CPU the same rounding is emulated, so
// the CPU twin shows what the format does to the activations, not a speed-up. Taps
// and outputs are widened back to float (exactly), so the statistics and the solve
// run in fp32 either way.
enum class ActStorage { Fp32, Fp16, Bf16 };
// "fp16" -> Fp16, "bf16" -> Bf16, any other precision -> Fp32.
ActStorage act_storage_for(const std::string& precision);
const char* act_storage_name(ActStorage s);  // "fp32", "fp16", "bf16"
// x rounded to the storage format and widened back (x itself for Fp32).
float round_to_storage(float x, ActStorage s);

namespace cpu {
class DnnlConv;
}

// A layer's parameters in T, as both forward passes use them: conv/linear weight and
// bias as stored; batchnorm folded (in double) into a per-channel scale (weight) and
// shift (bias). Empty for layers without tensors.
template <typename T>
void load_layer_params(const LayerSpec& l, const SafetensorsFile& weights, std::vector<T>* weight,
                       std::vector<T>* bias);

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
  // after it run. Lets a sweep run only the head on cached features.
  virtual Matrix<T> run_from(const std::string& layer, const T* input, int64_t batch,
                             bool after = false) const;
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
Matrix<T> Forward<T>::run_from(const std::string&, const T*, int64_t, bool) const {
  throw Error("run_from is not supported on this backend (use the CPU forward pass)");
}

// y = W x + b for a batch of columns, with the same BLAS call as the forward pass's
// linear layer (so a layer applied by hand gives the bits a model file would give).
// weight: (out, in) row-major; bias: empty or out; x: in x batch column-major. With
// 16-bit storage (T = float; weight and x already rounded, as CpuForward holds them)
// the result is stored as CpuForward stores a linear layer's: the product rounded,
// then product + bias rounded.
template <typename T>
Matrix<T> apply_linear(const std::vector<T>& weight, const std::vector<T>& bias, int64_t in,
                       int64_t out, const T* x, int64_t batch,
                       ActStorage storage = ActStorage::Fp32);

// v with every value rounded to the storage format (v itself for Fp32).
std::vector<float> rounded_to_storage(std::vector<float> v, ActStorage s);

template <typename T>  // float or double
class CpuForward final : public Forward<T> {
 public:
  // Checks the weights against the arch (check_weights) and loads them, converted to T,
  // once. The file may be closed afterwards. A storage other than Fp32 needs T = float
  // (throws dalr::Error otherwise).
  CpuForward(const Arch& arch, const SafetensorsFile& weights,
             ActStorage storage = ActStorage::Fp32);

  using Tap = typename Forward<T>::Tap;
  const Arch& arch() const override { return arch_; }

  // Runs the layers in order on `batch` images of c x h x w. With stop_at_layer_input
  // the name of a layer (typically the linear layer to compress), returns that layer's
  // input flattened in C order (n x batch); with an empty name, the network's output
  // (classes x batch). Shapes are checked before any work (layer_input_shapes); an
  // unknown layer name throws dalr::Error listing the named layers.
  Matrix<T> run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::string& stop_at_layer_input = "") const override;

  // One pass that hands the input of each named layer in `taps` to `tap` (as an
  // n x batch column-major block, valid during the call), stopping after the last one:
  // several layers' statistics from one forward pass.
  void run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::vector<std::string>& taps, const Tap& tap) const override;

  // The layers from `layer` (included; with `after`, excluded) to the end, on the input
  // of the first layer that runs (features x batch; sizes as for the arch's input image).
  Matrix<T> run_from(const std::string& layer, const T* input, int64_t batch,
                     bool after = false) const override;

 private:
  size_t index_of(const std::string& name) const;  // throws listing the named layers
  Matrix<T> walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w, size_t stop,
                 const std::vector<size_t>& taps, const Tap* tap, size_t start = 0) const;

  struct Params {
    std::vector<T> weight;  // conv (O, C, k, k) / linear (out, in) row-major; bn: scale
    std::vector<T> bias;    // empty when the layer has none; bn: shift
  };
  Arch arch_;
  ActStorage storage_ = ActStorage::Fp32;
  std::vector<Params> params_;  // one per layer, empty for layers without tensors
  // fp32 convolutions through oneDNN (cpu/dnnl_conv.hpp); null: im2col + BLAS.
  std::shared_ptr<cpu::DnnlConv> dnnl_;
};

extern template class CpuForward<float>;
extern template class CpuForward<double>;

}  // namespace dalr
