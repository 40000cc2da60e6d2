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
  // of the first layer that runs (features x batch; sizes as for the arch's input image),
  // with the linear or conv layers `subs` names replaced (their weights rounded to the storage
  // format as the constructor rounds a file's). Throws dalr::Error for a substitution of
  // a layer that is not linear or conv or not in the arch, given twice, or whose shapes do not
  // chain with the layers around it.
  Matrix<T> run_from(const std::string& layer, const T* input, int64_t batch, bool after = false,
                     const std::vector<Substitution<T>>& subs = {}) const override;

 private:
  struct Params {
    std::vector<T> weight;  // conv (O, C, k, k) / linear (out, in) row-major; bn: scale
    std::vector<T> bias;    // empty when the layer has none; bn: shift
  };
  // The layers a pass walks: the arch's own, or a copy with substitutions spliced in.
  struct Net;
  struct Activations;

  size_t index_of(const std::string& name) const;  // throws listing the named layers
  void plain_net(Net& net) const;
  void spliced_net(const std::vector<Substitution<T>>& subs, Net& net) const;
  Matrix<T> walk(const Net& net, const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                 size_t stop, const std::vector<size_t>& taps, const Tap* tap,
                 size_t start = 0) const;
  void run_layer(const Net& net, size_t i, int64_t batch, const ActShape& s, const ActShape& o,
                 bool fuse_relu, bool keep_layout, Activations& a) const;
  Arch arch_;
  ActStorage storage_ = ActStorage::Fp32;
  std::vector<Params> params_;  // one per layer, empty for layers without tensors
  // fp32 convolutions through oneDNN (cpu/dnnl_conv.hpp); null: im2col + BLAS.
  std::shared_ptr<cpu::DnnlConv> dnnl_;
};

extern template class CpuForward<float>;
extern template class CpuForward<double>;

}  // namespace dalr
