#include "tflite.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "error.h"

namespace vismem::tflite {

namespace {

// schema.fbs union BuiltinOptions tags of the option tables we decode.
namespace opt {
constexpr uint8_t conv_2d = 1, depthwise_conv_2d = 2, pool_2d = 5, fully_connected = 8, softmax = 9,
                  concatenation = 10, add = 11, reshape = 17, mul = 21, squeeze = 30;
}

// A read-only view of flatbuffer bytes in which every access is bounds-checked.
// Positions are absolute byte offsets into the file; uint64 arithmetic so that
// no sum of a position and a 32-bit length can wrap.
class Buf {
 public:
  Buf(const std::vector<uint8_t>& b, const std::string& name) : p_(b.data()), n_(b.size()), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const { throw Error(name_ + ": invalid TFLite model: " + what); }

  void need(uint64_t pos, uint64_t len, const char* what) const {
    if (pos > n_ || len > n_ - pos) fail(std::string(what) + " lies outside the file (truncated or corrupt)");
  }
  template <class T>
  T get(uint64_t pos, const char* what) const {
    need(pos, sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos, sizeof(T));  // little-endian host, unaligned-safe
    return v;
  }
  // Follows the uoffset_t stored at pos (relative to pos itself).
  uint64_t deref(uint64_t pos, const char* what) const {
    uint64_t target = pos + get<uint32_t>(pos, what);
    need(target, 4, what);
    return target;
  }
  uint64_t size() const { return n_; }
  const std::string& name() const { return name_; }

 private:
  const uint8_t* p_;
  uint64_t n_;
  const std::string& name_;
};

// A table: its position, and its vtable checked once on construction.
class Table {
 public:
  Table(const Buf& b, uint64_t pos, const char* what) : b_(&b), pos_(pos), what_(what) {
    int32_t soff = b.get<int32_t>(pos, what);
    int64_t vt = static_cast<int64_t>(pos) - soff;
    if (vt < 0 || static_cast<uint64_t>(vt) + 4 > b.size()) b.fail(std::string(what) + " has a vtable outside the file");
    vt_ = static_cast<uint64_t>(vt);
    vt_size_ = b.get<uint16_t>(vt_, what);
    obj_size_ = b.get<uint16_t>(vt_ + 2, what);
    if (vt_size_ < 4 || vt_size_ % 2) b.fail(std::string(what) + " has a malformed vtable");
    b.need(vt_, vt_size_, what);
    b.need(pos_, obj_size_, what);
  }

  bool has(int field) const { return slot(field) != 0; }

  template <class T>
  T scalar(int field, T dflt) const {
    uint16_t off = slot(field);
    if (!off) return dflt;
    if (off + sizeof(T) > obj_size_) b_->fail(std::string(what_) + " field " + std::to_string(field) + " overruns its table");
    return b_->get<T>(pos_ + off, what_);
  }
  // Absolute position of a referenced table / vector / string; 0 when absent.
  uint64_t ref(int field) const {
    uint16_t off = slot(field);
    if (!off) return 0;
    if (off + 4u > obj_size_) b_->fail(std::string(what_) + " field " + std::to_string(field) + " overruns its table");
    return b_->deref(pos_ + off, what_);
  }
  const Buf& buf() const { return *b_; }

 private:
  uint16_t slot(int field) const {
    uint64_t s = 4 + 2 * static_cast<uint64_t>(field);
    return s + 2 <= vt_size_ ? b_->get<uint16_t>(vt_ + s, what_) : 0;
  }
  const Buf* b_;
  uint64_t pos_, vt_ = 0;
  uint16_t vt_size_ = 0, obj_size_ = 0;
  const char* what_;
};

// A vector at pos: its length word and elem_size-byte elements, all in bounds.
struct Vec {
  uint64_t start = 0;  // first element
  uint32_t count = 0;
};
Vec vec(const Buf& b, uint64_t pos, uint64_t elem_size, const char* what) {
  if (!pos) return {};
  Vec v{pos + 4, b.get<uint32_t>(pos, what)};
  b.need(v.start, static_cast<uint64_t>(v.count) * elem_size, what);
  return v;
}

template <class T>
std::vector<T> scalars(const Table& t, int field, const char* what) {
  Vec v = vec(t.buf(), t.ref(field), sizeof(T), what);
  std::vector<T> out(v.count);
  for (uint32_t i = 0; i < v.count; ++i) out[i] = t.buf().get<T>(v.start + uint64_t{i} * sizeof(T), what);
  return out;
}

std::string str(const Table& t, int field, const char* what) {
  Vec v = vec(t.buf(), t.ref(field), 1, what);
  std::string s(v.count, '\0');
  for (uint32_t i = 0; i < v.count; ++i) s[i] = static_cast<char>(t.buf().get<uint8_t>(v.start + i, what));
  return s;
}

// The i-th table of a vector of tables.
Table table_at(const Buf& b, const Vec& v, uint32_t i, const char* what) {
  return Table(b, b.deref(v.start + uint64_t{i} * 4, what), what);
}

Activation activation(const Buf& b, int8_t v, const char* what) {
  if (v < 0 || v > 5) b.fail(std::string(what) + " has unknown fused activation " + std::to_string(v));
  return static_cast<Activation>(v);
}

Padding padding(const Buf& b, int8_t v, const char* what) {
  if (v != 0 && v != 1) b.fail(std::string(what) + " has unknown padding " + std::to_string(v));
  return static_cast<Padding>(v);
}

// Decodes the BuiltinOptions table of op (field numbers from schema.fbs).
void read_options(const Buf& b, const Table& t, Operator& op) {
  op.options_type = t.scalar<uint8_t>(3, 0);
  uint64_t pos = t.ref(4);
  if (!pos || op.options_type == 0) return;
  const char* w = "operator options";
  Table o(b, pos, w);
  switch (op.options_type) {
    case opt::conv_2d:  // padding, stride_w, stride_h, fused_activation_function, dilation_w, dilation_h
      op.padding = padding(b, o.scalar<int8_t>(0, 0), w);
      op.stride_w = o.scalar<int32_t>(1, 0);
      op.stride_h = o.scalar<int32_t>(2, 0);
      op.activation = activation(b, o.scalar<int8_t>(3, 0), w);
      op.dilation_w = o.scalar<int32_t>(4, 1);
      op.dilation_h = o.scalar<int32_t>(5, 1);
      break;
    case opt::depthwise_conv_2d:  // padding, stride_w, stride_h, depth_multiplier, activation, dilations
      op.padding = padding(b, o.scalar<int8_t>(0, 0), w);
      op.stride_w = o.scalar<int32_t>(1, 0);
      op.stride_h = o.scalar<int32_t>(2, 0);
      op.depth_multiplier = o.scalar<int32_t>(3, 0);
      op.activation = activation(b, o.scalar<int8_t>(4, 0), w);
      op.dilation_w = o.scalar<int32_t>(5, 1);
      op.dilation_h = o.scalar<int32_t>(6, 1);
      break;
    case opt::pool_2d:  // padding, stride_w, stride_h, filter_width, filter_height, activation
      op.padding = padding(b, o.scalar<int8_t>(0, 0), w);
      op.stride_w = o.scalar<int32_t>(1, 0);
      op.stride_h = o.scalar<int32_t>(2, 0);
      op.filter_w = o.scalar<int32_t>(3, 0);
      op.filter_h = o.scalar<int32_t>(4, 0);
      op.activation = activation(b, o.scalar<int8_t>(5, 0), w);
      break;
    case opt::fully_connected:
    case opt::add:
    case opt::mul:  // fused_activation_function first
      op.activation = activation(b, o.scalar<int8_t>(0, 0), w);
      break;
    case opt::concatenation:  // axis, fused_activation_function
      op.activation = activation(b, o.scalar<int8_t>(1, 0), w);
      break;
    case opt::softmax:
      op.beta = o.scalar<float>(0, 0.0f);
      break;
    case opt::reshape:
      op.new_shape = scalars<int32_t>(o, 0, w);
      break;
    case opt::squeeze:
      op.squeeze_dims = scalars<int32_t>(o, 0, w);
      break;
    default:
      break;  // options of operators we do not run: left at their defaults
  }
}

Quantization read_quant(const Buf& b, uint64_t pos) {
  Quantization q;
  if (!pos) return q;
  const char* w = "quantization parameters";
  Table t(b, pos, w);  // min, max, scale, zero_point, details_type, details, quantized_dimension
  q.scale = scalars<float>(t, 2, w);
  q.zero_point = scalars<int64_t>(t, 3, w);
  q.custom = t.scalar<uint8_t>(4, 0) != 0;
  q.quantized_dimension = t.scalar<int32_t>(6, 0);
  return q;
}

bool known_type(int8_t t) { return (t >= 0 && t <= 12) || t == 15 || t == 16; }

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int32_t d : shape) n *= d;
  return n;
}

int Model::find_tensor(const std::string& tensor_name) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == tensor_name) return static_cast<int>(i);
  return -1;
}

size_t type_size(TensorType t) {
  switch (t) {
    case TensorType::float32: case TensorType::int32: case TensorType::uint32: return 4;
    case TensorType::float16: case TensorType::int16: case TensorType::uint16: return 2;
    case TensorType::uint8: case TensorType::int8: case TensorType::boolean: return 1;
    case TensorType::int64: case TensorType::uint64: case TensorType::float64: case TensorType::complex64: return 8;
    case TensorType::complex128: return 16;
    case TensorType::string: break;
  }
  throw Error(std::string("TFLite tensor type ") + type_name(t) + " has no fixed element size");
}

const char* type_name(TensorType t) {
  switch (t) {
    case TensorType::float32: return "FLOAT32";
    case TensorType::float16: return "FLOAT16";
    case TensorType::int32: return "INT32";
    case TensorType::uint8: return "UINT8";
    case TensorType::int64: return "INT64";
    case TensorType::string: return "STRING";
    case TensorType::boolean: return "BOOL";
    case TensorType::int16: return "INT16";
    case TensorType::complex64: return "COMPLEX64";
    case TensorType::int8: return "INT8";
    case TensorType::float64: return "FLOAT64";
    case TensorType::complex128: return "COMPLEX128";
    case TensorType::uint64: return "UINT64";
    case TensorType::uint32: return "UINT32";
    case TensorType::uint16: return "UINT16";
  }
  return "UNKNOWN";
}

const char* op_name(int32_t code) {
  switch (code) {
    case op::add: return "ADD";
    case op::average_pool_2d: return "AVERAGE_POOL_2D";
    case op::concatenation: return "CONCATENATION";
    case op::conv_2d: return "CONV_2D";
    case op::depthwise_conv_2d: return "DEPTHWISE_CONV_2D";
    case op::dequantize: return "DEQUANTIZE";
    case op::fully_connected: return "FULLY_CONNECTED";
    case op::max_pool_2d: return "MAX_POOL_2D";
    case op::mul: return "MUL";
    case op::relu: return "RELU";
    case op::relu6: return "RELU6";
    case op::reshape: return "RESHAPE";
    case op::softmax: return "SOFTMAX";
    case op::custom: return "CUSTOM";
    case op::pad: return "PAD";
    case op::mean: return "MEAN";
    case op::squeeze: return "SQUEEZE";
    case op::quantize: return "QUANTIZE";
    default: break;
  }
  static thread_local std::string other;
  other = "BUILTIN_" + std::to_string(code);
  return other.c_str();
}

std::string shape_str(const std::vector<int32_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s.append(i ? "," : "").append(std::to_string(shape[i]));
  return s.append("]");
}

Model read_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model " + path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error("cannot read model " + path);
  return parse_model(std::move(bytes), path);
}

Model parse_model(std::vector<uint8_t> bytes, const std::string& name) {
  Model m;
  m.name = name;
  m.bytes = std::move(bytes);
  Buf b(m.bytes, m.name);
  if (m.bytes.size() < 8 || std::memcmp(m.bytes.data() + 4, "TFL3", 4) != 0)
    b.fail("no \"TFL3\" identifier at byte 4 (not a TFLite flatbuffer)");

  // Model: version, operator_codes, subgraphs, description, buffers, ...
  Table model(b, b.deref(0, "root table"), "model");
  m.version = model.scalar<uint32_t>(0, 0);
  m.description = str(model, 3, "model description");

  // Buffers first: tensors are checked against them.
  struct Span { uint64_t off = 0, size = 0; };
  std::vector<Span> buffers;
  {
    const char* w = "buffer";
    Vec v = vec(b, model.ref(4), 4, "buffers");
    buffers.resize(v.count);
    for (uint32_t i = 0; i < v.count; ++i) {
      Table t = table_at(b, v, i, w);  // data:[ubyte], offset:ulong, size:ulong
      Vec d = vec(b, t.ref(0), 1, w);
      buffers[i] = {d.start, d.count};
      uint64_t off = t.scalar<uint64_t>(1, 0), size = t.scalar<uint64_t>(2, 0);
      if (off > 1) {  // large models keep data after the flatbuffer, addressed from the file start
        b.need(off, size, w);
        buffers[i] = {off, size};
      }
    }
  }

  std::vector<std::string> custom_codes;
  std::vector<std::pair<int32_t, int32_t>> codes;  // (builtin code, version)
  {
    const char* w = "operator code";
    Vec v = vec(b, model.ref(1), 4, "operator codes");
    for (uint32_t i = 0; i < v.count; ++i) {
      Table t = table_at(b, v, i, w);  // deprecated_builtin_code:byte, custom_code, version, builtin_code:int
      // Models before schema 3a only set the int8 field; newer ones set both, or
      // put 127 (PLACEHOLDER_FOR_GREATER_OP_CODES) in the old one: the larger wins.
      int32_t code = std::max<int32_t>(t.scalar<int8_t>(0, 0), t.scalar<int32_t>(3, 0));
      if (code < 0) b.fail("operator code " + std::to_string(i) + " is negative");
      codes.emplace_back(code, t.scalar<int32_t>(2, 1));
      custom_codes.push_back(str(t, 1, w));
    }
  }

  Vec subgraphs = vec(b, model.ref(2), 4, "subgraphs");
  if (subgraphs.count == 0) b.fail("no subgraphs");
  Table sg = table_at(b, subgraphs, 0, "subgraph");  // tensors, inputs, outputs, operators, name

  {
    const char* w = "tensor";
    Vec v = vec(b, sg.ref(0), 4, "tensors");
    m.tensors.resize(v.count);
    for (uint32_t i = 0; i < v.count; ++i) {
      Table t = table_at(b, v, i, w);  // shape, type, buffer, name, quantization, ...
      Tensor& x = m.tensors[i];
      x.name = str(t, 3, w);
      std::string who = "tensor " + std::to_string(i) + " '" + x.name + "'";
      x.shape = scalars<int32_t>(t, 0, w);
      int64_t numel = 1;
      for (int32_t d : x.shape) {
        if (d < 0) b.fail(who + " has a negative dimension " + shape_str(x.shape));
        // Checked before multiplying: the product of two big dimensions overflows int64.
        if (d > 0 && numel > (int64_t{1} << 40) / d) b.fail(who + " is impossibly large " + shape_str(x.shape));
        numel *= d;
      }
      int8_t type = t.scalar<int8_t>(1, 0);
      if (!known_type(type)) b.fail(who + " has unsupported type " + std::to_string(type));
      x.type = static_cast<TensorType>(type);
      x.buffer = t.scalar<uint32_t>(2, 0);
      if (x.buffer >= buffers.size())
        b.fail(who + " refers to buffer " + std::to_string(x.buffer) + " of " + std::to_string(buffers.size()));
      x.quant = read_quant(b, t.ref(4));
      const Quantization& q = x.quant;
      if (!q.zero_point.empty() && q.zero_point.size() != q.scale.size())
        b.fail(who + " has " + std::to_string(q.scale.size()) + " scales but " + std::to_string(q.zero_point.size()) +
               " zero points");
      if (q.scale.size() > 1) {
        if (q.quantized_dimension < 0 || q.quantized_dimension >= static_cast<int32_t>(x.shape.size()) ||
            static_cast<int64_t>(q.scale.size()) != x.shape[q.quantized_dimension])
          b.fail(who + " has " + std::to_string(q.scale.size()) + " scales along axis " +
                 std::to_string(q.quantized_dimension) + " of shape " + shape_str(x.shape));
      }
      const Span& s = buffers[x.buffer];
      if (s.size > 0) {
        if (x.type == TensorType::string) b.fail(who + " is a STRING constant (unsupported)");
        uint64_t want = static_cast<uint64_t>(numel) * type_size(x.type);
        if (s.size != want)
          b.fail(who + " " + shape_str(x.shape) + " " + type_name(x.type) + " needs " + std::to_string(want) +
                 " bytes, its buffer has " + std::to_string(s.size));
        x.data_offset = s.off;
        x.data_size = s.size;
      }
    }
  }

  auto tensor_list = [&](const Table& t, int field, const char* what, bool allow_optional) {
    std::vector<int32_t> ids = scalars<int32_t>(t, field, what);
    for (int32_t id : ids)
      if (!(allow_optional && id == -1) && (id < 0 || static_cast<size_t>(id) >= m.tensors.size()))
        b.fail(std::string(what) + " names tensor " + std::to_string(id) + " of " + std::to_string(m.tensors.size()));
    return ids;
  };
  m.inputs = tensor_list(sg, 1, "subgraph inputs", false);
  m.outputs = tensor_list(sg, 2, "subgraph outputs", false);

  {
    Vec v = vec(b, sg.ref(3), 4, "operators");
    m.operators.resize(v.count);
    for (uint32_t i = 0; i < v.count; ++i) {
      Table t = table_at(b, v, i, "operator");  // opcode_index, inputs, outputs, options_type, options, ...
      Operator& op = m.operators[i];
      uint32_t idx = t.scalar<uint32_t>(0, 0);
      if (idx >= codes.size())
        b.fail("operator " + std::to_string(i) + " uses operator code " + std::to_string(idx) + " of " +
               std::to_string(codes.size()));
      op.code = codes[idx].first;
      op.version = codes[idx].second;
      op.custom_code = custom_codes[idx];
      op.inputs = tensor_list(t, 1, "operator inputs", true);
      op.outputs = tensor_list(t, 2, "operator outputs", false);
      read_options(b, t, op);
    }
  }
  return m;
}

std::vector<float> dequantize_with_scale(const Model& m, int tensor_index, const std::vector<float>& scale) {
  if (tensor_index < 0 || static_cast<size_t>(tensor_index) >= m.tensors.size())
    throw Error(m.name + ": no tensor " + std::to_string(tensor_index));
  const Tensor& t = m.tensors[tensor_index];
  if (!t.is_constant()) throw Error(m.name + ": tensor '" + t.name + "' has no constant data");
  int64_t n = t.numel();
  int64_t channels = scale.size();
  if (channels == 0 || (channels > 1 && (t.shape.empty() || t.shape[0] != channels)))
    throw Error(m.name + ": tensor '" + t.name + "' " + shape_str(t.shape) + " cannot take " + std::to_string(channels) +
                " scales");
  int64_t inner = channels > 1 ? n / channels : n;
  std::vector<float> out(n);
  const uint8_t* p = m.data(t);
  for (int64_t i = 0; i < n; ++i) {
    double q;
    switch (t.type) {
      case TensorType::uint8: q = p[i]; break;
      case TensorType::int8: q = static_cast<int8_t>(p[i]); break;
      case TensorType::int32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); q = v; break; }
      default: throw Error(m.name + ": tensor '" + t.name + "' has type " + type_name(t.type) + ", not an integer type");
    }
    out[i] = static_cast<float>(q * scale[channels > 1 ? i / inner : 0]);
  }
  return out;
}

std::vector<float> dequantize(const Model& m, int tensor_index) {
  if (tensor_index < 0 || static_cast<size_t>(tensor_index) >= m.tensors.size())
    throw Error(m.name + ": no tensor " + std::to_string(tensor_index));
  const Tensor& t = m.tensors[tensor_index];
  if (!t.is_constant()) throw Error(m.name + ": tensor '" + t.name + "' has no constant data");
  int64_t n = t.numel();
  std::vector<float> out(n);
  const uint8_t* p = m.data(t);
  if (t.type == TensorType::float32) {
    std::memcpy(out.data(), p, n * 4);
    return out;
  }
  if (t.type == TensorType::float16) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      // IEEE half -> float by hand (npy.h has one too, but tflite stays self-contained).
      uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
      if (exp == 0) {
        float v = std::ldexp(static_cast<float>(mant), -24);
        std::memcpy(&bits, &v, 4);
        bits |= sign;
      } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
      } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
      }
      std::memcpy(&out[i], &bits, 4);
    }
    return out;
  }
  const Quantization& q = t.quant;
  if (q.scale.empty() || q.custom)
    throw Error(m.name + ": tensor '" + t.name + "' (" + type_name(t.type) + ") has no quantization scale");
  // Per-channel: element i's channel along axis d is (i / stride_d) % shape[d].
  int64_t channels = q.scale.size(), stride = 1;
  if (channels > 1)
    for (size_t d = q.quantized_dimension + 1; d < t.shape.size(); ++d) stride *= t.shape[d];
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = channels > 1 ? (i / stride) % channels : 0;
    double zp = q.zero_point.empty() ? 0.0 : static_cast<double>(q.zero_point[c]);
    double v;
    switch (t.type) {
      case TensorType::uint8: v = p[i]; break;
      case TensorType::int8: v = static_cast<int8_t>(p[i]); break;
      case TensorType::int16: { int16_t x; std::memcpy(&x, p + 2 * i, 2); v = x; break; }
      case TensorType::int32: { int32_t x; std::memcpy(&x, p + 4 * i, 4); v = x; break; }
      default:
        throw Error(m.name + ": tensor '" + t.name + "' has type " + type_name(t.type) + ", which vismem cannot dequantize");
    }
    out[i] = static_cast<float>((v - zp) * q.scale[c]);
  }
  return out;
}

}  // namespace vismem::tflite
