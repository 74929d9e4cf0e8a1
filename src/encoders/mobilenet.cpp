#include "mobilenet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <vector>

#include "cpu.h"
#include "error.h"
#include "hash.h"
#include "linalg.h"
#include "packed_gemm.h"
#include "preprocess.h"
#include "qgemm.h"
#include "team.h"
#include "tflite.h"

namespace vismem {

namespace {

namespace tfl = tflite;

constexpr float kInf = std::numeric_limits<float>::infinity();

// The int8 mode's 1x1 convs with fewer inputs stay float32. V1's first (32 ->
// 64 at 112x112, 4.5% of the multiply-adds) as int8 was slower than float (per
// pixel, quantizing 32 activations costs about as much as the 64 x 32
// product) and gave ~30% of int8's error (1 - cosine to float32 over 64
// Imagenette images: 8.5e-5 with it int8, 6.0e-5 with it float): the fewer
// products a sum has, the less the activations' rounding averages out.
constexpr int kInt8MinInputs = 64;

// One image's activation, NHWC with N = 1 (images run one at a time through the plan).
struct Shape {
  int h = 1, w = 1, c = 1;
  int64_t size() const { return int64_t{h} * w * c; }
  bool operator==(const Shape&) const = default;
  std::string str() const {  // appends, not "a" + b chains: GCC 12 -O3 warns falsely on those (-Wrestrict)
    std::string s = "[";
    s.append(std::to_string(h)).append(",").append(std::to_string(w)).append(",").append(std::to_string(c));
    return s.append("]");
  }
};

enum class Kind { conv, depthwise, avg_pool, add, softmax, copy };

// One operator of the graph with its weights, float32, in the layout the kernels read.
struct Layer {
  Kind kind = Kind::copy;
  int op_index = 0;            // position in the model's operator list
  int32_t code = 0;            // tflite BuiltinOperator, for messages
  int in0 = -1, in1 = -1;      // value ids read (in1: ADD's second operand)
  int out = -1;                // value id written
  Shape in, out_shape;
  int kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;  // window, strides, dilations
  int pad_top = 0, pad_left = 0;                       // TF SAME: pad_total / 2 before, the rest after
  int mult = 1;                                        // depthwise channel multiplier
  float lo = -kInf, hi = kInf;                         // fused activation as a clamp
  float beta = 1.0f;                                   // softmax
  std::string weight_name, bias_name;                  // the checkpoint tensors the weights came from
  std::vector<float> w;  // conv: [O][kh][kw][I] (the file's layout, = O x K for im2col); depthwise: [kh][kw][C]
  std::vector<float> b;  // [O]
  std::vector<float> w_grid;  // conv: [O] the file's weight scale per output channel (w is an integer multiple of it)
  QuantizedMatrix q;     // the int8 copy of w (1x1 convs of an int8 model); empty otherwise
  PackedMatrix p;        // w packed for pmatmul where packed_gemm_preferred(): every float conv (int8: the first)

  bool pointwise() const { return kind == Kind::conv && kh == 1 && kw == 1 && sh == 1 && sw == 1; }
  int64_t k() const { return int64_t{kh} * kw * in.c; }  // im2col row length
  // Output rows per im2col tile: about 1024 pixels, so a tile stays in L2.
  int tile_rows() const { return std::max(1, std::min(out_shape.h, 1024 / std::max(1, out_shape.w))); }
};

// Which layers run to produce one value, and where every value lives.
struct Plan {
  std::vector<int> layers;            // indices into Impl::layers, in execution order
  int out_value = 0;
  std::vector<int> slot;              // value id -> scratch slot (-1: not needed)
  std::vector<int64_t> slot_floats;   // size of each slot
  int64_t col_floats = 0;             // im2col tile, per thread
};

// Per-call arena: activation slots for a group of images, an im2col tile per thread.
struct Scratch {
  int group;                               // images per pass: every slot holds `group` values back to back
  std::vector<std::unique_ptr<float[]>> slots;
  std::vector<std::unique_ptr<float[]>> col;
  Scratch(const Plan& p, int group, int threads) : group(group) {
    // Uninitialized: every kernel writes its whole output before anything reads it.
    for (int64_t n : p.slot_floats) slots.emplace_back(new float[n * group]);
    for (int t = 0; t < threads; ++t) col.emplace_back(new float[std::max<int64_t>(p.col_floats, 1)]);
  }
  float* slot(const Plan& p, int value) const { return slots[p.slot[value]].get(); }
};

}  // namespace

struct MobileNet::Impl {
  // Config
  std::string path, sha256, name;
  Precision precision = Precision::f32;
  int input_size = 224;
  PreprocessConfig pre;
  std::vector<Shape> values;               // value id -> shape; value 0 is the input image
  std::vector<std::string> value_names;    // the tflite tensor names
  // Weights (inside the layers)
  std::vector<Layer> layers;
  Plan embed, full;
};

namespace {

[[noreturn]] void fail(const tfl::Model& m, const std::string& what) {
  throw Error(m.name + ": unsupported MobileNet graph: " + what);
}

std::string op_label(const tfl::Model& m, int i) {
  return "operator " + std::to_string(i) + " (" + tfl::op_name(m.operators[i].code) + ")";
}

Shape to_shape(const tfl::Model& m, const tfl::Tensor& t) {
  const auto& s = t.shape;
  if (s.empty() || s[0] != 1 || s.size() > 4 || s.size() == 3)
    fail(m, "tensor '" + t.name + "' has shape " + tfl::shape_str(s) + "; expected [1,H,W,C] or [1,C]");
  for (int32_t d : s)
    if (d < 1) fail(m, "tensor '" + t.name + "' has an empty shape " + tfl::shape_str(s));
  return s.size() == 4 ? Shape{s[1], s[2], s[3]} : Shape{1, 1, s.size() == 2 ? s[1] : 1};
}

void set_activation(const tfl::Model& m, int i, tfl::Activation a, Layer& L) {
  switch (a) {
    case tfl::Activation::none: break;
    case tfl::Activation::relu: L.lo = 0; break;
    case tfl::Activation::relu6: L.lo = 0, L.hi = 6; break;
    case tfl::Activation::relu_n1_to_1: L.lo = -1, L.hi = 1; break;
    default: fail(m, op_label(m, i) + " has an unsupported fused activation " + std::to_string(static_cast<int>(a)));
  }
}

// Output length and leading padding of one spatial axis, as TFLite computes them.
int out_extent(const tfl::Model& m, int i, int64_t in, int64_t k, int64_t s, int64_t d, tfl::Padding p, int* pad_before) {
  // Bounded so that no index arithmetic in the kernels can overflow an int.
  if (k < 1 || s < 1 || d < 1 || k > 4096 || s > 4096 || d > 4096)
    fail(m, op_label(m, i) + " has a window, stride or dilation outside [1, 4096]");
  int64_t eff = (k - 1) * d + 1;
  int64_t out;
  if (p == tfl::Padding::same) {
    out = (in + s - 1) / s;
    int64_t total = std::max<int64_t>((out - 1) * s + eff - in, 0);
    *pad_before = static_cast<int>(std::min<int64_t>(total / 2, 1 << 30));
  } else {
    out = in >= eff ? (in - eff) / s + 1 : 0;
    *pad_before = 0;
  }
  if (out < 1) fail(m, op_label(m, i) + ": window larger than its input");
  return static_cast<int>(out);
}

const tfl::Tensor& constant(const tfl::Model& m, int i, int slot, const char* what) {
  const tfl::Operator& op = m.operators[i];
  if (slot >= static_cast<int>(op.inputs.size()) || op.inputs[slot] < 0)
    fail(m, op_label(m, i) + " has no " + what + " input");
  const tfl::Tensor& t = m.tensors[op.inputs[slot]];
  if (!t.is_constant()) fail(m, op_label(m, i) + ": " + what + " '" + t.name + "' is not a constant");
  return t;
}

// Dequantized bias [O]; zeros when the operator has none. Int32 biases without
// their own parameters use scale = input_scale * weight_scale (TFLite's rule).
std::vector<float> read_bias(const tfl::Model& m, int i, int slot, int64_t channels, Layer& L) {
  const tfl::Operator& op = m.operators[i];
  if (slot >= static_cast<int>(op.inputs.size()) || op.inputs[slot] < 0) return std::vector<float>(channels, 0.0f);
  const tfl::Tensor& t = constant(m, i, slot, "bias");
  if (t.numel() != channels)
    fail(m, op_label(m, i) + ": bias '" + t.name + "' " + tfl::shape_str(t.shape) + " for " + std::to_string(channels) +
                " channels");
  L.bias_name = t.name;
  if (t.type == tfl::TensorType::int32 && t.quant.scale.empty()) {
    const auto& in_q = m.tensors[op.inputs[0]].quant;
    const auto& w_q = m.tensors[op.inputs[1]].quant;
    if (in_q.scale.size() != 1 || w_q.scale.empty())
      fail(m, op_label(m, i) + ": int32 bias '" + t.name + "' without input and weight scales");
    std::vector<float> scale(w_q.scale.size());
    for (size_t c = 0; c < scale.size(); ++c) scale[c] = in_q.scale[0] * w_q.scale[c];
    return tfl::dequantize_with_scale(m, op.inputs[slot], scale);
  }
  return tfl::dequantize(m, op.inputs[slot]);
}

// Backward reachability from `target`: the layers that must run, and slots for
// their values by liveness (a value's slot is reused once its last reader ran).
Plan make_plan(const MobileNet::Impl& net, int target) {
  Plan p;
  p.out_value = target;
  std::vector<char> needed(net.values.size(), 0);
  needed[target] = 1;
  for (int li = static_cast<int>(net.layers.size()) - 1; li >= 0; --li) {
    const Layer& L = net.layers[li];
    if (!needed[L.out]) continue;
    p.layers.push_back(li);
    needed[L.in0] = 1;
    if (L.in1 >= 0) needed[L.in1] = 1;
  }
  std::reverse(p.layers.begin(), p.layers.end());

  const int end = static_cast<int>(p.layers.size());
  std::vector<int> last_use(net.values.size(), -1);
  for (int pos = 0; pos < end; ++pos) {
    const Layer& L = net.layers[p.layers[pos]];
    last_use[L.in0] = pos;
    if (L.in1 >= 0) last_use[L.in1] = pos;
  }
  last_use[target] = end;  // the result outlives the plan

  p.slot.assign(net.values.size(), -1);
  std::vector<int> free_slots;
  auto take = [&](int v) {
    int64_t need = net.values[v].size();
    // Best fit among free slots; else grow the largest free one; else a new slot.
    int best = -1;
    for (size_t f = 0; f < free_slots.size(); ++f) {
      int s = free_slots[f];
      bool fits = p.slot_floats[s] >= need;
      if (best < 0) { best = static_cast<int>(f); continue; }
      int b = free_slots[best];
      bool best_fits = p.slot_floats[b] >= need;
      if ((fits && (!best_fits || p.slot_floats[s] < p.slot_floats[b])) ||
          (!fits && !best_fits && p.slot_floats[s] > p.slot_floats[b]))
        best = static_cast<int>(f);
    }
    int s;
    if (best >= 0) {
      s = free_slots[best];
      free_slots.erase(free_slots.begin() + best);
    } else {
      s = static_cast<int>(p.slot_floats.size());
      p.slot_floats.push_back(0);
    }
    p.slot_floats[s] = std::max(p.slot_floats[s], need);
    p.slot[v] = s;
  };
  take(0);  // the input image
  for (int pos = 0; pos < end; ++pos) {
    const Layer& L = net.layers[p.layers[pos]];
    take(L.out);  // before freeing the inputs: a kernel never writes over what it reads
    if (last_use[L.in0] == pos) free_slots.push_back(p.slot[L.in0]);
    if (L.in1 >= 0 && L.in1 != L.in0 && last_use[L.in1] == pos) free_slots.push_back(p.slot[L.in1]);
    if (last_use[L.out] < 0) free_slots.push_back(p.slot[L.out]);  // computed but never read
    if (L.kind == Kind::conv && !L.pointwise())
      p.col_floats = std::max(p.col_floats, int64_t{L.tile_rows()} * L.out_shape.w * L.k());
  }
  return p;
}

std::unique_ptr<MobileNet::Impl> build(const tfl::Model& m) {
  auto net = std::make_unique<MobileNet::Impl>();
  if (m.inputs.size() != 1) fail(m, "the graph has " + std::to_string(m.inputs.size()) + " inputs, expected 1");
  if (m.outputs.empty()) fail(m, "the graph has no outputs");
  const tfl::Tensor& input = m.tensors[m.inputs[0]];
  const auto& is = input.shape;
  if (is.size() != 4 || is[0] != 1 || is[3] != 3 || is[1] != is[2] || is[1] < 1)
    fail(m, "input '" + input.name + "' has shape " + tfl::shape_str(is) + ", expected [1,S,S,3]");
  if (input.type == tfl::TensorType::uint8) {
    // vismem feeds (x - 128) / 128 floats; the model must mean the same by its uint8 input.
    const auto& q = input.quant;
    if (q.scale.size() != 1 || std::fabs(q.scale[0] - 1.0f / 128) > 1e-6f || q.zero_point.size() != 1 ||
        q.zero_point[0] != 128)
      fail(m, "input '" + input.name + "' is not quantized as (x - 128) / 128");
  } else if (input.type != tfl::TensorType::float32) {
    fail(m, std::string("input '") + input.name + "' has type " + tfl::type_name(input.type));
  }
  if (is[1] > 8192) fail(m, "input '" + input.name + "' " + tfl::shape_str(is) + " is too large");
  net->input_size = is[1];

  std::vector<int> value_of(m.tensors.size(), -1);
  auto new_value = [&](int tensor, Shape s) {
    if (s.size() > (int64_t{1} << 28)) fail(m, "tensor '" + m.tensors[tensor].name + "' " + s.str() + " is too large");
    value_of[tensor] = static_cast<int>(net->values.size());
    net->values.push_back(s);
    net->value_names.push_back(m.tensors[tensor].name);
    return value_of[tensor];
  };
  new_value(m.inputs[0], Shape{is[1], is[2], 3});

  for (int i = 0; i < static_cast<int>(m.operators.size()); ++i) {
    const tfl::Operator& op = m.operators[i];
    Layer L;
    L.op_index = i;
    L.code = op.code;
    auto activation_input = [&](int slot) {
      if (slot >= static_cast<int>(op.inputs.size()) || op.inputs[slot] < 0)
        fail(m, op_label(m, i) + " lacks input " + std::to_string(slot));
      int t = op.inputs[slot];
      if (m.tensors[t].is_constant())
        fail(m, op_label(m, i) + ": input '" + m.tensors[t].name + "' is a constant (only activations supported here)");
      if (value_of[t] < 0)
        fail(m, op_label(m, i) + " reads '" + m.tensors[t].name + "' before any operator writes it");
      return value_of[t];
    };
    if (op.outputs.size() != 1) fail(m, op_label(m, i) + " has " + std::to_string(op.outputs.size()) + " outputs");
    const tfl::Tensor& out_t = m.tensors[op.outputs[0]];
    if (out_t.is_constant() || value_of[op.outputs[0]] >= 0)
      fail(m, op_label(m, i) + " writes '" + out_t.name + "', which is a constant or already written");
    L.in0 = activation_input(0);
    L.in = net->values[L.in0];

    switch (op.code) {
      case tfl::op::conv_2d:
      case tfl::op::depthwise_conv_2d: {
        bool dw = op.code == tfl::op::depthwise_conv_2d;
        L.kind = dw ? Kind::depthwise : Kind::conv;
        const tfl::Tensor& w = constant(m, i, 1, "weight");
        if (w.shape.size() != 4) fail(m, op_label(m, i) + ": weight '" + w.name + "' is not 4-D");
        L.weight_name = w.name;
        L.kh = w.shape[1], L.kw = w.shape[2];
        int out_c;
        if (dw) {  // [1, kh, kw, C * multiplier]
          out_c = w.shape[3];
          if (w.shape[0] != 1 || out_c % L.in.c != 0 ||
              (op.depth_multiplier > 0 && op.depth_multiplier != out_c / L.in.c))
            fail(m, op_label(m, i) + ": weight " + tfl::shape_str(w.shape) + " does not fit input " + L.in.str() +
                        " with multiplier " + std::to_string(op.depth_multiplier));
          L.mult = out_c / L.in.c;
        } else {  // [O, kh, kw, I]
          out_c = w.shape[0];
          if (w.shape[3] != L.in.c)
            fail(m, op_label(m, i) + ": weight " + tfl::shape_str(w.shape) + " does not fit input " + L.in.str());
        }
        L.sh = op.stride_h, L.sw = op.stride_w, L.dh = op.dilation_h, L.dw = op.dilation_w;
        int oh = out_extent(m, i, L.in.h, L.kh, L.sh, L.dh, op.padding, &L.pad_top);
        int ow = out_extent(m, i, L.in.w, L.kw, L.sw, L.dw, op.padding, &L.pad_left);
        L.out_shape = {oh, ow, out_c};
        L.w = tfl::dequantize(m, op.inputs[1]);
        if (const auto& wq = m.tensors[op.inputs[1]].quant; !dw && !wq.scale.empty() &&
                                                           (wq.scale.size() == 1 || wq.quantized_dimension == 0)) {
          L.w_grid.resize(out_c);
          for (int o = 0; o < out_c; ++o) L.w_grid[o] = wq.scale[std::min<size_t>(o, wq.scale.size() - 1)];
        }
        L.b = read_bias(m, i, 2, out_c, L);
        set_activation(m, i, op.activation, L);
        break;
      }
      case tfl::op::average_pool_2d: {
        L.kind = Kind::avg_pool;
        L.kh = op.filter_h, L.kw = op.filter_w, L.sh = op.stride_h, L.sw = op.stride_w;
        int oh = out_extent(m, i, L.in.h, L.kh, L.sh, 1, op.padding, &L.pad_top);
        int ow = out_extent(m, i, L.in.w, L.kw, L.sw, 1, op.padding, &L.pad_left);
        L.out_shape = {oh, ow, L.in.c};
        set_activation(m, i, op.activation, L);
        break;
      }
      case tfl::op::add: {
        L.kind = Kind::add;
        L.in1 = activation_input(1);
        if (!(net->values[L.in1] == L.in))
          fail(m, op_label(m, i) + " adds " + L.in.str() + " and " + net->values[L.in1].str() + " (no broadcasting)");
        L.out_shape = L.in;
        set_activation(m, i, op.activation, L);
        break;
      }
      case tfl::op::softmax:
        L.kind = Kind::softmax;
        L.beta = op.beta;
        L.out_shape = L.in;
        break;
      case tfl::op::reshape:
      case tfl::op::squeeze:
      case tfl::op::quantize:
      case tfl::op::dequantize:
        // Float execution: these only relabel (or requantize) values.
        L.kind = Kind::copy;
        L.out_shape = to_shape(m, out_t);
        if (L.out_shape.size() != L.in.size())
          fail(m, op_label(m, i) + " turns " + L.in.str() + " into " + tfl::shape_str(out_t.shape));
        break;
      default:
        fail(m, op_label(m, i) + (op.code == tfl::op::custom ? " '" + op.custom_code + "'" : std::string()) +
                    " is not supported");
    }
    if (!(to_shape(m, out_t) == L.out_shape))
      fail(m, op_label(m, i) + " computes " + L.out_shape.str() + " but the model says '" + out_t.name + "' is " +
                  tfl::shape_str(out_t.shape));
    L.out = new_value(op.outputs[0], L.out_shape);
    net->layers.push_back(std::move(L));
  }

  int out_v = value_of[m.outputs[0]];
  if (out_v <= 0) fail(m, "the output '" + m.tensors[m.outputs[0]].name + "' is not computed by any operator");
  // The embedding: the last global average pool (1x1 spatial output).
  int embed_v = -1;
  bool has_add = false;
  for (const Layer& L : net->layers) {
    if (L.kind == Kind::avg_pool && L.out_shape.h == 1 && L.out_shape.w == 1) embed_v = L.out;
    has_add |= L.kind == Kind::add;
  }
  if (embed_v < 0) fail(m, "no global AVERAGE_POOL_2D to take the embedding from");
  net->name = has_add ? "mobilenet_v2" : "mobilenet_v1";
  net->embed = make_plan(*net, embed_v);
  net->full = make_plan(*net, out_v);
  return net;
}

// ---- kernels: NHWC float32, each over a range of its output so threads can split it ----
// The kernels, compiled once per vector ISA level (mobilenet_kernels.inl) and
// chosen at run time by cpu_isa(). The levels differ only in rounding (FMA
// contraction, summation order of the vectorized loops): well inside the
// fixtures' tolerances (tests/test_mobilenet.cpp runs every level).
#define VISMEM_MN_LEVEL 0
namespace portable {
#include "mobilenet_kernels.inl"
}  // namespace portable
#undef VISMEM_MN_LEVEL

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define VISMEM_MN_LEVEL 1
namespace avx2 {
#include "mobilenet_kernels.inl"
}  // namespace avx2
#undef VISMEM_MN_LEVEL
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#define VISMEM_MN_LEVEL 2
namespace avx512 {
#include "mobilenet_kernels.inl"
}  // namespace avx512
#undef VISMEM_MN_LEVEL
#pragma GCC pop_options

// One level's kernels.
struct Kernels {
  void (*conv_pointwise)(const Layer&, const float*, float*, int64_t, int64_t, int, int);
  void (*conv_im2col)(const Layer&, const float*, float*, int, int, float*);
  void (*depthwise)(const Layer&, const float*, float*, int, int);
  void (*avg_pool)(const Layer&, const float*, float*, int, int);
  void (*add)(const Layer&, const float*, const float*, float*, int64_t, int64_t);
};
const Kernels& kernels_for(Isa isa) {
  static const Kernels k[3] = {
      {portable::conv_pointwise, portable::conv_im2col, portable::depthwise, portable::avg_pool, portable::add},
      {avx2::conv_pointwise, avx2::conv_im2col, avx2::depthwise, avx2::avg_pool, avx2::add},
      {avx512::conv_pointwise, avx512::conv_im2col, avx512::depthwise, avx512::avg_pool, avx512::add}};
  return k[static_cast<int>(isa)];
}

void softmax(const Layer& L, const float* in, float* out, int group) {
  const int c = L.in.c;
  const int64_t rows = L.in.size() / c * group;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * c;
    float* y = out + r * c;
    const float mx = *std::max_element(x, x + c);
    double sum = 0;
    for (int j = 0; j < c; ++j) sum += y[j] = std::exp(L.beta * (x[j] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < c; ++j) y[j] *= inv;
  }
}

// Splits [0, n) into contiguous chunks of at least min_chunk items (a few per
// thread, so a thread that loses its core holds back little) and runs
// f(begin, end, worker) for each on the team.
template <class F>
void parallel_ranges(Team& team, int64_t n, int64_t min_chunk, F f) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((n + min_chunk - 1) / min_chunk, 4 * team.size()));
  if (chunks == 1) return f(int64_t{0}, n, 0);
  team.run(chunks, [&](int64_t i, int worker) { f(n * i / chunks, n * (i + 1) / chunks, worker); });
}

// Maps output rows [r0, r1) of a group (image g's rows are g * out_h + y) to
// calls f(g, y0, y1), one per image touched.
template <class F>
void for_image_rows(const Layer& L, int64_t r0, int64_t r1, F f) {
  const int oh = L.out_shape.h;
  while (r0 < r1) {
    const int g = static_cast<int>(r0 / oh), y0 = static_cast<int>(r0 % oh);
    const int y1 = static_cast<int>(std::min<int64_t>(oh, y0 + (r1 - r0)));
    f(g, y0, y1);
    r0 += y1 - y0;
  }
}

// One layer over a group of images: x, x1 -> y, each `group` values back to back.
void run_layer(const Kernels& k, const Layer& L, const float* x, const float* x1, float* y, Scratch& s, Team& team) {
  const int group = s.group;
  const int64_t in_size = L.in.size(), out_size = L.out_shape.size();
  const int64_t rows = int64_t{group} * L.out_shape.h;
  switch (L.kind) {
    case Kind::conv:
      if (L.pointwise()) {
        const int64_t m = int64_t{group} * L.out_shape.h * L.out_shape.w;
        const int co = L.out_shape.c;
        const int64_t P = team.size();
        if (!L.p.empty() || !L.q.empty()) {
          // Weights packed (or quantized) at load: split the pixel rows, one
          // share (in whole 4-row units) per thread, never the channels, which
          // made every thread pack (or quantize) all of A. Measured in one
          // process, alternating (MobileNet V1, batch 1, 2 threads): 11.6 ms
          // with the channel split of the 7x7 and 14x14 layers and 8 chunks
          // elsewhere, 10.4 with rows in 2 shares, 10.6 with rows in up to 8
          // chunks (1 thread: 19.0). Any split computes each row alike.
          const int64_t tiles = (m + 3) / 4;
          team.run(P, [&](int64_t i, int) {
            const int64_t b = tiles * i / P * 4, e = std::min(m, tiles * (i + 1) / P * 4);
            if (b < e) k.conv_pointwise(L, x, y, b, e, 0, co);
          });
        } else if (P == 1 || m >= 256 * P) {
          parallel_ranges(team, m, 256, [&](int64_t b, int64_t e, int) { k.conv_pointwise(L, x, y, b, e, 0, co); });
        } else {
          // sgemm, few pixels (the 7x7 and 14x14 layers): split the output
          // channels instead, so each thread packs only its part of the
          // weights (16-column vectors).
          const int unit = 16;
          parallel_ranges(team, (co + unit - 1) / unit, 1, [&](int64_t b, int64_t e, int) {
            k.conv_pointwise(L, x, y, 0, m, static_cast<int>(b * unit), static_cast<int>(std::min<int64_t>(co, e * unit)));
          });
        }
      } else {
        parallel_ranges(team, rows, 1, [&](int64_t b, int64_t e, int worker) {
          for_image_rows(L, b, e, [&](int g, int y0, int y1) {
            k.conv_im2col(L, x + g * in_size, y + g * out_size, y0, y1, s.col[worker].get());
          });
        });
      }
      break;
    case Kind::depthwise:
      parallel_ranges(team, rows, 1, [&](int64_t b, int64_t e, int) {
        for_image_rows(L, b, e, [&](int g, int y0, int y1) { k.depthwise(L, x + g * in_size, y + g * out_size, y0, y1); });
      });
      break;
    case Kind::avg_pool:
      parallel_ranges(team, rows, 1, [&](int64_t b, int64_t e, int) {
        for_image_rows(L, b, e, [&](int g, int y0, int y1) { k.avg_pool(L, x + g * in_size, y + g * out_size, y0, y1); });
      });
      break;
    case Kind::add:
      parallel_ranges(team, group * out_size, 16384, [&](int64_t b, int64_t e, int) { k.add(L, x, x1, y, b, e); });
      break;
    case Kind::softmax:
      softmax(L, x, y, group);
      break;
    case Kind::copy:
      std::memcpy(y, x, sizeof(float) * group * in_size);
      break;
  }
}

// A group of s.group images through a plan: pixels [group, 3, S, S] (CHW) ->
// out [group, value size].
void run_group(const Kernels& k, const MobileNet::Impl& net, const Plan& p, const float* pixels, float* out, Scratch& s,
               Team& team) {
  const Shape& is = net.values[0];
  const int64_t plane = int64_t{is.h} * is.w;
  float* x = s.slot(p, 0);  // [group, S, S, 3]
  for (int g = 0; g < s.group; ++g, x += 3 * plane, pixels += 3 * plane)
    for (int64_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) x[i * 3 + c] = pixels[c * plane + i];
  for (int li : p.layers) {
    const Layer& L = net.layers[li];
    run_layer(k, L, s.slot(p, L.in0), L.in1 >= 0 ? s.slot(p, L.in1) : nullptr, s.slot(p, L.out), s, team);
  }
  std::memcpy(out, s.slot(p, p.out_value), sizeof(float) * s.group * net.values[p.out_value].size());
}

// Images per pass. Larger groups make the late layers' matmuls (49 or 196
// pixels per image) taller, so OpenBLAS packs each weight matrix once per group
// instead of once per image; but the early layers' activations (3 MB per
// image) then spill out of L2. Measured on MobileNet V1, 1 thread, batch 16
// (min ms/image, SkylakeX kernels): group 1: 15.2, 2: 12.7, 4: 13.6, 8: 13.1.
constexpr int kMaxGroup = 2;

// n images. With at least `threads` images, each thread takes whole groups (no
// synchronization inside the network); otherwise one group runs with every
// layer split across the threads.
void run_batch(const MobileNet::Impl& net, const Plan& p, const float* pixels, int n, float* out, int threads) {
  if (n <= 0) return;
  if (threads <= 0) threads = default_threads();
  threads = std::min(threads, 256);
  // Our threads each call matmul; BLAS threading on top would oversubscribe the cores.
  if (blas_threads() != 1) set_blas_threads(1);
  const Kernels& k = kernels_for(cpu_isa());
  const int64_t in_floats = int64_t{3} * net.input_size * net.input_size;
  const int64_t out_floats = net.values[p.out_value].size();
  TeamLease lease(threads);  // the process's kept team where free (team.h)
  Team& team = lease.team();
  if (threads > 1 && n >= threads) {
    const int group = std::min(kMaxGroup, (n + threads - 1) / threads);
    const int groups = (n + group - 1) / group;
    const int last = n - (groups - 1) * group;
    std::vector<std::unique_ptr<Scratch>> scratch;  // per worker
    std::vector<std::unique_ptr<Team>> solo;        // each worker runs its groups alone
    for (int t = 0; t < threads; ++t) {
      scratch.push_back(std::make_unique<Scratch>(p, group, 1));
      solo.push_back(std::make_unique<Team>(1));
    }
    std::unique_ptr<Scratch> tail = last != group ? std::make_unique<Scratch>(p, last, 1) : nullptr;
    team.run(groups, [&](int64_t gi, int worker) {
      Scratch& s = gi == groups - 1 && tail ? *tail : *scratch[worker];
      run_group(k, net, p, pixels + gi * group * in_floats, out + gi * group * out_floats, s, *solo[worker]);
    });
    return;
  }
  const int group = std::min(kMaxGroup, n);
  // The arena is kept beside the kept team, under its lease, for the next
  // pass with the same sizes: fresh, its pages (3 MB per image in the first
  // layers) were faulted in again every call while the helpers waited.
  struct KeptArena {
    std::vector<int64_t> key;
    std::unique_ptr<Scratch> scratch;
  };
  std::vector<int64_t> key = p.slot_floats;
  key.insert(key.end(), {p.col_floats, group, threads});
  std::unique_ptr<Scratch> own;
  KeptArena* kept = lease.kept() ? &lease.kept_state<KeptArena>() : nullptr;
  if (!kept) {
    own = std::make_unique<Scratch>(p, group, threads);
  } else if (kept->key != key || !kept->scratch) {
    kept->scratch.reset();  // the old arena goes before the new one is allocated
    kept->scratch = std::make_unique<Scratch>(p, group, threads);
    kept->key = std::move(key);
  }
  Scratch& s = own ? *own : *kept->scratch;
  int i = 0;
  for (; i + group <= n; i += group) run_group(k, net, p, pixels + i * in_floats, out + i * out_floats, s, team);
  if (i < n) {
    Scratch tail(p, n - i, threads);
    run_group(k, net, p, pixels + i * in_floats, out + i * out_floats, tail, team);
  }
}

}  // namespace

MobileNet::MobileNet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MobileNet::~MobileNet() = default;

std::unique_ptr<MobileNet> MobileNet::load(const std::string& path, Precision precision) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model " + path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error("cannot read model " + path);
  return load(std::move(bytes), path, precision);
}

std::unique_ptr<MobileNet> MobileNet::load(std::vector<uint8_t> bytes, const std::string& path, Precision precision) {
  const tfl::Model m = tfl::parse_model(std::move(bytes), path);
  std::unique_ptr<Impl> impl = build(m);
  impl->precision = precision;
  if (precision == Precision::int8)
    for (Layer& L : impl->layers)
      // w: [co, ci]. On the file's own grid, so the uint8 weights stay exact (but for
      // the few channels whose codes reach past 127 from the zero point).
      if (L.pointwise() && L.in.c >= kInt8MinInputs)
        L.q = quantize_rows(L.w.data(), L.out_shape.c, L.in.c, L.w_grid.empty() ? nullptr : L.w_grid.data());
  // The float convs on packed weights (in the int8 mode: the 3x3 one and the first 1x1).
  if (packed_gemm_preferred())
    for (Layer& L : impl->layers)
      if (L.kind == Kind::conv && L.q.empty()) L.p = pack_rows(L.w.data(), L.out_shape.c, L.k());
  impl->path = path;
  impl->sha256 = sha256_hex(m.bytes.data(), m.bytes.size());
  impl->pre = PreprocessConfig::mobilenet();
  // Models for other sizes (Coral ships 128 ... 224 px MobileNets) take that size whole.
  impl->pre.resize_shorter = impl->pre.crop = impl->input_size;
  return std::unique_ptr<MobileNet>(new MobileNet(std::move(impl)));
}

std::string MobileNet::name() const { return impl_->name; }
int MobileNet::dim() const { return static_cast<int>(impl_->values[impl_->embed.out_value].size()); }
int MobileNet::input_size() const { return impl_->input_size; }
const PreprocessConfig& MobileNet::preprocess() const { return impl_->pre; }
std::string MobileNet::fingerprint() const {
  // int8 embeddings differ from float ones: a memory must not mix them. "|a8":
  // the int8 revision with 8-bit activations and the first 1x1 conv in float32;
  // the earlier one (7-bit activations, "|int8" alone) made other numbers.
  return impl_->sha256 + "|" + impl_->pre.describe() + (impl_->precision == Precision::int8 ? "|int8|a8" : "");
}
Precision MobileNet::precision() const { return impl_->precision; }
int MobileNet::output_dim() const { return static_cast<int>(impl_->values[impl_->full.out_value].size()); }
const std::string& MobileNet::embedding_tensor() const { return impl_->value_names[impl_->embed.out_value]; }
const std::string& MobileNet::output_tensor() const { return impl_->value_names[impl_->full.out_value]; }

void MobileNet::forward(const float* pixels, int n, float* out, int threads) const {
  run_batch(*impl_, impl_->embed, pixels, n, out, threads);
}

void MobileNet::run_full(const float* pixels, int n, float* out, int threads) const {
  run_batch(*impl_, impl_->full, pixels, n, out, threads);
}

std::string MobileNet::summary() const {
  static const char* kinds[] = {"conv", "depthwise", "avg_pool", "add", "softmax", "copy"};
  std::string s;
  for (const Layer& L : impl_->layers) {
    s.append(std::to_string(L.op_index)).append(" ").append(tflite::op_name(L.code));
    s.append(" (").append(kinds[static_cast<int>(L.kind)]).append(")");
    if (L.kind == Kind::conv || L.kind == Kind::depthwise || L.kind == Kind::avg_pool) {
      s.append(" ").append(std::to_string(L.kh)).append("x").append(std::to_string(L.kw));
      s.append("/").append(std::to_string(L.sh));
    }
    s.append(" ").append(L.in.str()).append(" -> ").append(L.out_shape.str());
    if (L.hi == 6) s += " relu6";
    if (!L.q.empty()) s += " int8";
    s += "\n";
  }
  return s;
}

}  // namespace vismem
