// The TFLite reader against the shipped models' documented structure
// (models/README.md, the MobileNet papers) and hand-built flatbuffers; corrupt,
// truncated and unsupported files must throw vismem::Error, never crash.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "error.h"
#include "mobilenet.h"
#include "tflite.h"
#include "tflite_builder.h"

using namespace vismem;
using namespace vismem::tflite;
using vismem::test::ModelSpec;

namespace {

const std::string kModels = std::string(VISMEM_SHARED_DIR) + "/models/";
const std::string kV1 = kModels + "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
const std::string kV2 = kModels + "mobilenet_v2_1.0_224_quant.tflite";

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::map<std::string, int> op_counts(const Model& m) {
  std::map<std::string, int> n;
  for (const Operator& op : m.operators) ++n[op_name(op.code)];
  return n;
}

// A one-operator model around the tensors under test (the reader does not need a runnable graph).
ModelSpec holder(std::vector<vismem::test::TensorSpec> tensors, std::vector<std::vector<uint8_t>> buffers) {
  ModelSpec s;
  s.opcodes = {{0, 0}};
  s.tensors = std::move(tensors);
  s.inputs = {0};
  s.outputs = {0};
  s.buffers = std::move(buffers);
  s.buffers.insert(s.buffers.begin(), std::vector<uint8_t>{});
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(TfliteReader, MobilenetV1MatchesItsModelCard) {
  Model m = read_model(kV1);
  // README: 28 operators, 14 CONV_2D, 13 DEPTHWISE_CONV_2D with fused ReLU6, 1 AVERAGE_POOL_2D.
  EXPECT_EQ(m.operators.size(), 28u);
  auto n = op_counts(m);
  EXPECT_EQ(n["CONV_2D"], 14);
  EXPECT_EQ(n["DEPTHWISE_CONV_2D"], 13);
  EXPECT_EQ(n["AVERAGE_POOL_2D"], 1);
  for (const Operator& op : m.operators) {
    if (op.code == op::depthwise_conv_2d) {
      EXPECT_EQ(op.activation, Activation::relu6);
    }
  }
  // README: input uint8 [1,224,224,3], scale 1/128, zero point 128; output uint8 [1,1,1,1024], scale 0.0235285.
  ASSERT_EQ(m.inputs.size(), 1u);
  const Tensor& in = m.tensors[m.inputs[0]];
  EXPECT_EQ(in.shape, (std::vector<int32_t>{1, 224, 224, 3}));
  EXPECT_EQ(in.type, TensorType::uint8);
  ASSERT_EQ(in.quant.scale.size(), 1u);
  EXPECT_FLOAT_EQ(in.quant.scale[0], 1.0f / 128);
  EXPECT_EQ(in.quant.zero_point[0], 128);
  const Tensor& out = m.tensors[m.outputs[0]];
  EXPECT_EQ(out.shape, (std::vector<int32_t>{1, 1, 1, 1024}));
  ASSERT_EQ(out.quant.scale.size(), 1u);
  EXPECT_NEAR(out.quant.scale[0], 0.0235285f, 1e-7);
  EXPECT_EQ(out.quant.zero_point[0], 0);
  // The first layer: 32 filters 3x3x3, stride 2, SAME (MobileNet V1 table 1).
  const Operator& first = m.operators[0];
  EXPECT_EQ(first.code, op::conv_2d);
  EXPECT_EQ(m.tensors[first.inputs[1]].shape, (std::vector<int32_t>{32, 3, 3, 3}));
  EXPECT_EQ(first.stride_h, 2);
  EXPECT_EQ(first.padding, Padding::same);
  EXPECT_EQ(m.operators.back().filter_h, 7);
}

TEST(TfliteReader, MobilenetV2HasResidualAddsAndAClassifier) {
  Model m = read_model(kV2);
  auto n = op_counts(m);
  // MobileNetV2 (Sandler et al., table 2): 17 bottlenecks, each one depthwise conv;
  // residual ADDs where stride is 1 and channels repeat: 1 + 2 + 3 + 2 + 2 = 10.
  EXPECT_EQ(n["DEPTHWISE_CONV_2D"], 17);
  EXPECT_EQ(n["ADD"], 10);
  EXPECT_EQ(m.operators.back().code, op::softmax);
  EXPECT_EQ(m.tensors[m.outputs[0]].shape, (std::vector<int32_t>{1, 1001}));  // README: 1001 classes
}

TEST(TfliteReader, DequantizesPerTensorPerChannelAndHalf) {
  using vismem::test::bytes_of;
  std::vector<uint8_t> a = {10, 12, 0, 255, 11, 9};
  std::vector<int8_t> b = {4, -3, 7, -128, 127, 0};
  std::vector<int32_t> c = {-5, 0, 123456};
  std::vector<uint16_t> h = {0x3C00, 0xC000, 0x0001};  // 1, -2, the smallest subnormal 2^-24
  ModelSpec s = holder(
      {
          {.shape = {2, 1, 1, 3}, .type = 3, .buffer = 1, .name = "a", .scale = {0.5f}, .zero_point = {10}},
          {.shape = {1, 1, 2, 3}, .type = 9, .buffer = 2, .name = "b", .scale = {1.0f, 0.5f, 0.25f},
           .zero_point = {0, 1, -1}, .quantized_dimension = 3},
          {.shape = {3}, .type = 2, .buffer = 3, .name = "c"},
          {.shape = {3}, .type = 1, .buffer = 4, .name = "h"},
      },
      {a, bytes_of(b), bytes_of(c), bytes_of(h)});
  Model m = parse_model(vismem::test::build_model(s), "dequant.tflite");
  std::vector<float> fa = dequantize(m, 0), fb = dequantize(m, 1), fh = dequantize(m, 3);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(fa[i], (a[i] - 10) * 0.5f) << i;
  const float scales[3] = {1.0f, 0.5f, 0.25f};
  const int zps[3] = {0, 1, -1};
  for (size_t i = 0; i < b.size(); ++i) EXPECT_FLOAT_EQ(fb[i], (b[i] - zps[i % 3]) * scales[i % 3]) << i;
  EXPECT_EQ(fh, (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24)}));
  // int32 without parameters: TFLite's bias rule, one scale per output channel.
  std::vector<float> fc = dequantize_with_scale(m, 2, {0.1f, 0.2f, 0.3f});
  EXPECT_FLOAT_EQ(fc[0], -0.5f);
  EXPECT_FLOAT_EQ(fc[2], 123456 * 0.3f);
  std::string e = error_of([&] { dequantize(m, 2); });
  EXPECT_NE(e.find("no quantization scale"), std::string::npos) << e;
}

TEST(TfliteReader, OperatorCodeIsTheLargerOfTheDeprecatedAndNewFields) {
  ModelSpec s = holder({{.shape = {1}, .name = "x"}}, {});
  // Old converters set only the int8 field; new ones put 127 there and the real code in the int32 field.
  s.opcodes = {{4, 0}, {127, 130}, {3, 3}};
  for (uint32_t i = 0; i < 3; ++i) s.ops.push_back({.opcode_index = i, .inputs = {0}, .outputs = {0}});
  Model m = parse_model(vismem::test::build_model(s), "codes.tflite");
  ASSERT_EQ(m.operators.size(), 3u);
  EXPECT_EQ(m.operators[0].code, op::depthwise_conv_2d);
  EXPECT_EQ(m.operators[1].code, 130);
  EXPECT_EQ(m.operators[2].code, op::conv_2d);
  EXPECT_STREQ(op_name(130), "BUILTIN_130");
}

TEST(TfliteReader, RejectsFilesThatAreNotTflite) {
  EXPECT_NE(error_of([] { parse_model({}, "empty.tflite"); }).find("TFL3"), std::string::npos);
  std::string text = "this is not a flatbuffer at all";
  EXPECT_NE(error_of([&] { parse_model({text.begin(), text.end()}, "text.tflite"); }).find("TFL3"), std::string::npos);
  EXPECT_NE(error_of([] { read_model("/nonexistent/model.tflite"); }).find("cannot open"), std::string::npos);
}

TEST(TfliteReader, RejectsInconsistentModelsNamingTheProblem) {
  auto expect_error = [](ModelSpec s, const std::string& what) {
    std::string e = error_of([&] { parse_model(vismem::test::build_model(s), "bad.tflite"); });
    EXPECT_NE(e.find(what), std::string::npos) << "wanted '" << what << "' in: " << e;
    EXPECT_NE(e.find("bad.tflite"), std::string::npos) << e;
  };
  const std::vector<uint8_t> six(6, 1);
  // A [2,3] float32 tensor needs 24 bytes.
  expect_error(holder({{.shape = {2, 3}, .buffer = 1, .name = "weights"}}, {six}), "'weights' [2,3] FLOAT32 needs 24 bytes");
  expect_error(holder({{.shape = {2, 3}, .type = 99, .name = "odd"}}, {}), "unsupported type 99");
  expect_error(holder({{.shape = {2, -3}, .name = "neg"}}, {}), "negative dimension");
  expect_error(holder({{.shape = {6}, .type = 3, .buffer = 5, .name = "far"}}, {six}), "refers to buffer 5 of 2");
  expect_error(holder({{.shape = {6}, .type = 3, .name = "q", .scale = {1, 2}, .zero_point = {0, 0}}}, {}),
               "2 scales along axis 0");
  ModelSpec s = holder({{.shape = {1}, .name = "x"}}, {});
  s.ops.push_back({.opcode_index = 0, .inputs = {0, 7}, .outputs = {0}});
  expect_error(s, "operator inputs names tensor 7 of 1");
  s.ops[0] = {.opcode_index = 3, .inputs = {0}, .outputs = {0}};
  expect_error(s, "operator code 3 of 1");
  s.ops[0] = {.opcode_index = 0, .inputs = {0}, .outputs = {0}, .options_type = 1,
              .options = {vismem::test::scalar<int8_t>(3, 9)}};  // Conv2DOptions with activation 9
  expect_error(s, "unknown fused activation 9");
}

TEST(TfliteReader, UnsupportedOperatorIsNamedAtLoad) {
  ModelSpec s = holder({{.shape = {1, 4, 4, 3}, .name = "input"}, {.shape = {1, 48}, .name = "flat"}}, {});
  s.opcodes = {{9, 9}};  // FULLY_CONNECTED: the reader takes it, the MobileNet runner does not
  s.ops.push_back({.opcode_index = 0, .inputs = {0}, .outputs = {1}});
  s.outputs = {1};
  std::vector<uint8_t> bytes = vismem::test::build_model(s);
  EXPECT_NO_THROW(parse_model(bytes, "fc.tflite"));
  std::string e = error_of([&] { MobileNet::load(bytes, "fc.tflite"); });
  EXPECT_NE(e.find("FULLY_CONNECTED"), std::string::npos) << e;
}

// Every prefix of the real model: the root table, the vtables and the buffers
// all lie past byte 0, so a cut anywhere must be noticed.
TEST(TfliteReader, TruncatedRealModelThrows) {
  const std::vector<uint8_t> full = file_bytes(kV1);
  ASSERT_GT(full.size(), 1000000u);
  std::vector<size_t> lengths;
  for (size_t n = 0; n < 256; ++n) lengths.push_back(n);
  for (size_t k = 1; k < 200; ++k) lengths.push_back(full.size() * k / 200);
  for (size_t n = full.size() - 64; n < full.size(); ++n) lengths.push_back(n);
  for (size_t n : lengths) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    EXPECT_THROW(parse_model(std::move(cut), "cut.tflite"), Error) << "length " << n;
  }
}

// Random byte flips in the model's structure (everything but the weight data):
// each mutant must throw vismem::Error or load; a loaded one must also run.
TEST(TfliteReader, FlippedStructureBytesThrowOrLoadNeverCrash) {
  const std::vector<uint8_t> full = file_bytes(kV1);
  const Model ref = parse_model(full, "v1");
  std::vector<char> is_data(full.size(), 0);
  for (const Tensor& t : ref.tensors)
    std::fill(is_data.begin() + t.data_offset, is_data.begin() + t.data_offset + t.data_size, 1);
  std::vector<size_t> structure;
  for (size_t i = 0; i < full.size(); ++i)
    if (!is_data[i]) structure.push_back(i);
  ASSERT_GT(structure.size(), 1000u);

  std::mt19937 rng(12345);
  int thrown = 0, loaded = 0, ran = 0;
  std::vector<float> pixels(3 * 224 * 224, 0.25f), out;
  for (int iter = 0; iter < 400; ++iter) {
    std::vector<uint8_t> bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) bytes[structure[rng() % structure.size()]] ^= static_cast<uint8_t>(1 + rng() % 255);
    try {
      auto net = MobileNet::load(std::move(bytes), "flipped.tflite");
      ++loaded;
      if (ran < 3 && net->input_size() == 224) {  // a few full runs: loading must have validated every shape
        out.resize(net->output_dim());
        net->run_full(pixels.data(), 1, out.data(), 1);
        ++ran;
      }
    } catch (const Error&) {
      ++thrown;
    }
  }
  std::printf("[          ] 400 mutants of the V1 model: %d rejected, %d loaded, %d run\n", thrown, loaded, ran);
  EXPECT_EQ(thrown + loaded, 400);
  EXPECT_GT(thrown, 0);
}

// The hand-built network: every byte of the file flipped three ways, and every
// truncation. Small enough to run each mutant that loads.
TEST(TfliteReader, EveryByteOfASmallModelFlippedOrCutThrowsOrRuns) {
  const std::vector<uint8_t> good = vismem::test::build_model(vismem::test::small_net());
  ASSERT_NO_THROW(MobileNet::load(good, "small.tflite"));
  const int s = 6;
  std::vector<float> pixels(3 * s * s, 0.5f), out(64);
  int thrown = 0, loaded = 0;
  auto attempt = [&](std::vector<uint8_t> bytes) {
    try {
      auto net = MobileNet::load(std::move(bytes), "mutant.tflite");
      ++loaded;
      if (net->input_size() == s && net->output_dim() <= 64 && net->dim() <= 64) {
        net->run_full(pixels.data(), 1, out.data(), 1);
        net->forward(pixels.data(), 1, out.data(), 1);
      }
    } catch (const Error&) {
      ++thrown;
    }
  };
  for (size_t i = 0; i < good.size(); ++i)
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      std::vector<uint8_t> b = good;
      b[i] ^= x;
      attempt(std::move(b));
    }
  for (size_t n = 0; n < good.size(); ++n) attempt(std::vector<uint8_t>(good.begin(), good.begin() + n));
  std::printf("[          ] %zu mutants of a %zu-byte model: %d rejected, %d loaded and ran\n", 4 * good.size(),
              good.size(), thrown, loaded);
  EXPECT_EQ(thrown + loaded, static_cast<int>(4 * good.size()));
  EXPECT_GT(thrown, static_cast<int>(good.size()));  // at least every truncation
}
