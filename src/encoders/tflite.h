// tflite.h: a bounds-checked reader for TensorFlow Lite flatbuffer models ("TFL3").
//
// Basic usage:
//   vismem::tflite::Model m = vismem::tflite::read_model("mobilenet.tflite");  // throws vismem::Error
//   for (const auto& op : m.operators) std::cout << vismem::tflite::op_name(op.code) << "\n";
//   std::vector<float> w = vismem::tflite::dequantize(m, op.inputs[1]);         // uint8 -> float32
//
// Hand-written against the public schema (tensorflow/lite/schema/schema.fbs), so
// vismem needs no flatbuffers or TFLite library. Every offset, vtable, vector and
// buffer is checked against the file size before it is read: a corrupt,
// truncated or hostile file throws vismem::Error naming the file and the
// problem, never reads out of bounds. Only the first subgraph is read (the
// model; others are control-flow bodies that vismem does not run).
// Thread safety: a Model is a value; const access from any number of threads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vismem::tflite {

// schema.fbs enum TensorType (the values we know the size of).
enum class TensorType : int8_t {
  float32 = 0, float16 = 1, int32 = 2, uint8 = 3, int64 = 4, string = 5, boolean = 6, int16 = 7,
  complex64 = 8, int8 = 9, float64 = 10, complex128 = 11, uint64 = 12, uint32 = 15, uint16 = 16,
};

// schema.fbs enum BuiltinOperator: the operators vismem's float runner knows.
// Others are read fine (Operator::code holds any value) and named by op_name().
namespace op {
inline constexpr int32_t add = 0, average_pool_2d = 1, concatenation = 2, conv_2d = 3, depthwise_conv_2d = 4,
                         dequantize = 6, fully_connected = 9, max_pool_2d = 17, mul = 18, relu = 19, relu6 = 21,
                         reshape = 22, softmax = 25, custom = 32, pad = 34, mean = 40, squeeze = 43,
                         quantize = 114;
}  // namespace op

enum class Padding : int8_t { same = 0, valid = 1 };
enum class Activation : int8_t { none = 0, relu = 1, relu_n1_to_1 = 2, relu6 = 3, tanh = 4, sign_bit = 5 };

struct Quantization {
  std::vector<float> scale;        // empty: not quantized
  std::vector<int64_t> zero_point;  // same length as scale (or empty = all 0)
  int32_t quantized_dimension = 0;  // axis the scales run along when there are several
  bool custom = false;              // QuantizationDetails set: a scheme we do not decode
};

struct Tensor {
  std::string name;
  std::vector<int32_t> shape;
  TensorType type = TensorType::float32;
  uint32_t buffer = 0;        // index into the model's buffers (0 = none)
  Quantization quant;
  size_t data_offset = 0;     // constant data: bytes [data_offset, data_offset + data_size) of Model::bytes
  size_t data_size = 0;       // 0 for activations
  bool is_constant() const { return data_size > 0; }
  int64_t numel() const;
};

// The options of the operators vismem runs (defaults as schema.fbs gives them).
struct Operator {
  int32_t code = 0;              // BuiltinOperator: max(builtin_code, deprecated_builtin_code)
  int32_t version = 1;
  std::string custom_code;       // for op::custom
  std::vector<int32_t> inputs;   // tensor indices, -1 = optional input left out
  std::vector<int32_t> outputs;
  uint8_t options_type = 0;      // schema.fbs union BuiltinOptions tag (0 = none)
  Padding padding = Padding::same;
  int32_t stride_w = 1, stride_h = 1;
  int32_t dilation_w = 1, dilation_h = 1;
  int32_t depth_multiplier = 1;
  int32_t filter_w = 1, filter_h = 1;  // pooling window
  Activation activation = Activation::none;
  float beta = 1.0f;                   // softmax
  std::vector<int32_t> new_shape;      // reshape
  std::vector<int32_t> squeeze_dims;   // squeeze
};

struct Model {
  std::string name;              // file name, for messages
  std::vector<uint8_t> bytes;    // the whole file; tensors' constant data lives here
  uint32_t version = 0;
  std::string description;
  std::vector<Tensor> tensors;   // subgraph 0
  std::vector<int32_t> inputs;
  std::vector<int32_t> outputs;
  std::vector<Operator> operators;  // in execution order

  const uint8_t* data(const Tensor& t) const { return bytes.data() + t.data_offset; }
  // Index of the tensor with this name, or -1.
  int find_tensor(const std::string& tensor_name) const;
};

Model read_model(const std::string& path);
// Parses a model held in memory; name is used in error messages.
Model parse_model(std::vector<uint8_t> bytes, const std::string& name);

// The constant tensor as float32: float32 copied, float16 widened, uint8 / int8 /
// int16 / int32 dequantized with (q - zero_point) * scale, per tensor or per
// channel along quant.quantized_dimension. Throws if the tensor has no data, or
// is integer without quantization parameters (use dequantize_with_scale).
std::vector<float> dequantize(const Model& m, int tensor_index);
// Integer data with the given scales (one, or one per element of the tensor's
// first axis) and zero point 0: how TFLite defines int32 biases when their own
// parameters are missing (scale = input_scale * weight_scale).
std::vector<float> dequantize_with_scale(const Model& m, int tensor_index, const std::vector<float>& scale);

const char* op_name(int32_t code);      // "CONV_2D", or "BUILTIN_123" for ones not in our table
const char* type_name(TensorType t);    // "UINT8", ...
size_t type_size(TensorType t);         // bytes per element; throws for STRING and unknown types
std::string shape_str(const std::vector<int32_t>& shape);  // "[1,224,224,3]"

}  // namespace vismem::tflite
