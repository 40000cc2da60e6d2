#include "cpu/dnnl_conv.hpp"

#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "dalr/error.hpp"

#ifdef DALR_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#if DNNL_VERSION_MAJOR != 2  // written against Debian 12's 2.x; 3.x dropped the op descs
#warning "oneDNN is not version 2.x: the CPU convolutions stay on im2col + BLAS"
#undef DALR_HAVE_DNNL
#endif
#endif

namespace dalr::cpu {

namespace {
// "dnnl" (the default where built) or "im2col".
bool want_dnnl() {
  const char* v = std::getenv("DALR_CPU_CONV");
  if (!v || !*v || std::strcmp(v, "dnnl") == 0) return true;
  if (std::strcmp(v, "im2col") == 0) return false;
  throw Error(std::string("DALR_CPU_CONV='") + v + "' is not a convolution path (dnnl, im2col)");
}
}  // namespace

#ifdef DALR_HAVE_DNNL

using dnnl::memory;
using tag = memory::format_tag;

struct DnnlConv::Impl {
  // One primitive per shape; its src/dst are oneDNN's preferred layouts (channels-last or
  // blocked), reached from the caller's NCHW by reorders when they differ.
  struct Entry {
    dnnl::convolution_forward conv;
    memory::desc src, dst, user_src, user_dst;
    memory weights;  // reordered once, shared with other entries of the layer
  };
  using Key = std::tuple<size_t, int64_t, int64_t, int64_t, bool>;  // layer, N, H, W, relu

  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  std::map<Key, Entry> entries;           // erased only for kUncached keys: a Layout points at one
  std::multimap<size_t, memory> weights;  // per layer, one per preferred layout
  std::vector<float> src_buf, dst_buf;    // grow-only staging for the primitive's layouts

  memory weights_for(size_t layer, const memory::desc& want, const LayerSpec& l,
                     const std::vector<float>& w) {
    auto range = weights.equal_range(layer);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second.get_desc() == want) return it->second;
    const memory::desc user({l.out, l.in, l.kernel, l.kernel}, memory::data_type::f32, tag::oihw);
    memory src(user, engine, const_cast<float*>(w.data())), dst(want, engine);
    dnnl::reorder(src, dst).execute(stream, src, dst);
    stream.wait();
    weights.emplace(layer, dst);
    return dst;
  }

  const Entry& entry(size_t layer, int64_t n, const ActShape& s, const ActShape& o,
                     const LayerSpec& l, const std::vector<float>& w, bool has_bias, bool relu) {
    const Key key{layer, n, s.h, s.w, relu};
    auto it = entries.find(key);
    if (it != entries.end()) return it->second;
    const auto f32 = memory::data_type::f32;
    const memory::desc src_any({n, s.c, s.h, s.w}, f32, tag::any);
    const memory::desc dst_any({n, o.c, o.h, o.w}, f32, tag::any);
    const memory::desc w_any({l.out, l.in, l.kernel, l.kernel}, f32, tag::any);
    const memory::desc b_md({l.out}, f32, tag::x);
    // oneDNN floors (H + 2 pad - span) / stride + 1 as PyTorch does, so padding_r = pad.
    // Its dilation counts the pixels skipped between taps: PyTorch's dilation - 1.
    const memory::dims strides{l.stride, l.stride}, pad{l.pad, l.pad},
        dilates{l.dilation - 1, l.dilation - 1};
    const auto prop = dnnl::prop_kind::forward_inference;
    const auto alg = dnnl::algorithm::convolution_direct;
    const auto desc = has_bias
                          ? dnnl::convolution_forward::desc(prop, alg, src_any, w_any, b_md,
                                                            dst_any, strides, dilates, pad, pad)
                          : dnnl::convolution_forward::desc(prop, alg, src_any, w_any, dst_any,
                                                            strides, dilates, pad, pad);
    dnnl::primitive_attr attr;
    if (relu) {
      // oneDNN's relu is x > 0 ? x : alpha * x, so NaN stays NaN as in the im2col path.
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine);
    Entry e{dnnl::convolution_forward(pd),
            pd.src_desc(),
            pd.dst_desc(),
            memory::desc({n, s.c, s.h, s.w}, f32, tag::nchw),
            memory::desc({n, o.c, o.h, o.w}, f32, tag::nchw),
            weights_for(layer, pd.weights_desc(), l, w)};
    return entries.emplace(key, std::move(e)).first->second;
  }

  static float* staging(std::vector<float>& buf, const memory::desc& d) {
    const size_t n = (d.get_size() + sizeof(float) - 1) / sizeof(float);
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }

  // A one-off key's primitives and weights, before it runs with new weights.
  void forget(size_t layer) {
    for (auto it = entries.begin(); it != entries.end();)
      it = std::get<0>(it->first) == layer ? entries.erase(it) : std::next(it);
    weights.erase(layer);
  }

  Layout run(size_t layer, const float* x, Layout x_layout, int64_t batch, const ActShape& s,
             const ActShape& o, const LayerSpec& l, const std::vector<float>& w,
             const std::vector<float>& b, bool relu, bool keep_layout, std::vector<float>* y) {
    std::lock_guard<std::mutex> lock(mutex);
    if (layer >= kUncached) forget(layer);
    const Entry& e = entry(layer, batch, s, o, l, w, !b.empty(), relu);
    const memory::desc& x_desc = x_layout ? static_cast<const Entry*>(x_layout)->dst : e.user_src;
    const memory::desc& y_desc = keep_layout ? e.dst : e.user_dst;
    y->resize((y_desc.get_size() + sizeof(float) - 1) / sizeof(float));
    memory user_src(x_desc, engine, const_cast<float*>(x)), user_dst(y_desc, engine, y->data());
    memory src = user_src, dst = user_dst;
    if (e.src != x_desc) {
      src = memory(e.src, engine, staging(src_buf, e.src));
      dnnl::reorder(user_src, src).execute(stream, user_src, src);
    }
    const bool reorder_dst = e.dst != y_desc;
    if (reorder_dst) dst = memory(e.dst, engine, staging(dst_buf, e.dst));
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, e.weights}, {DNNL_ARG_DST, dst}};
    if (!b.empty())
      args.emplace(DNNL_ARG_BIAS, memory({{l.out}, memory::data_type::f32, tag::x}, engine,
                                         const_cast<float*>(b.data())));
    e.conv.execute(stream, args);
    if (reorder_dst) dnnl::reorder(dst, user_dst).execute(stream, dst, user_dst);
    stream.wait();
    return keep_layout ? &e : nullptr;
  }
};

DnnlConv::DnnlConv() : impl_(std::make_unique<Impl>()) {}

std::shared_ptr<DnnlConv> DnnlConv::create() {
  if (!want_dnnl()) return nullptr;
  try {
    return std::shared_ptr<DnnlConv>(new DnnlConv());
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN: cannot create a CPU engine: ") + e.what());
  }
}

DnnlConv::Layout DnnlConv::run(size_t layer, const float* x, Layout x_layout, int64_t batch,
                               const ActShape& s, const ActShape& o, const LayerSpec& l,
                               const std::vector<float>& weight, const std::vector<float>& bias,
                               bool relu, bool keep_layout, std::vector<float>* y) {
  try {
    return impl_->run(layer, x, x_layout, batch, s, o, l, weight, bias, relu, keep_layout, y);
  } catch (const dnnl::error& e) {
    throw Error("oneDNN convolution (layer " + std::to_string(layer) + "): " + e.what() +
                " (DALR_CPU_CONV=im2col avoids oneDNN)");
  }
}

#else  // no oneDNN in this build: CpuForward keeps the im2col path

struct DnnlConv::Impl {};
DnnlConv::DnnlConv() = default;

std::shared_ptr<DnnlConv> DnnlConv::create() {
  want_dnnl();  // still rejects unknown values
  return nullptr;
}

DnnlConv::Layout DnnlConv::run(size_t, const float*, Layout, int64_t, const ActShape&,
                               const ActShape&, const LayerSpec&, const std::vector<float>&,
                               const std::vector<float>&, bool, bool, std::vector<float>*) {
  throw Error("this build has no oneDNN");
}

#endif

DnnlConv::~DnnlConv() = default;

}  // namespace dalr::cpu
