#pragma once
// The CPU forward pass: the oracle the GPU pipeline is tested against, and the engine
// for --device cpu (dalr/forward.hpp's Forward<T>, made by make_cpu_backend()).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/forward.hpp"
#include "dalr/matrix.hpp"

namespace dalr {

class SafetensorsFile;

namespace cpu {
class DnnlConv;
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
