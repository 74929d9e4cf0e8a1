// MobileNet encoders against outside references: OpenCV DNN and Arm NN outputs
// of the V1 embedder on 12 photos (fixtures/mobilenet_v1), the obvious ImageNet
// labels of those photos for the V2 classifier, and a plain-loop reference of
// TFLite's operator definitions on a hand-built network.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "cpu.h"
#include "encoder.h"
#include "error.h"
#include "hash.h"
#include "image.h"
#include "mobilenet.h"
#include "npy.h"
#include "packed_gemm.h"
#include "preprocess.h"
#include "tflite.h"
#include "tflite_builder.h"
#include "util_test.h"

using namespace vismem;

namespace {

const std::string kShared = VISMEM_SHARED_DIR;
const std::string kV1 = kShared + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
const std::string kV2 = kShared + "/models/mobilenet_v2_1.0_224_quant.tflite";
const std::string kFixtures = kShared + "/fixtures/mobilenet_v1/";
const std::vector<std::string> kPhotos = {
    "bird", "cat", "dragonfly", "grace_hopper", "imprinting_cat_test_0", "imprinting_cat_train_0",
    "imprinting_dog_test_0", "imprinting_dog_train_0", "imprinting_hotdog_test_0", "imprinting_hotdog_train_0",
    "imprinting_hotdog_train_1", "sunflower"};
constexpr float kArmnnScale = 0.0235285f;  // fixtures README: real value = 0.0235285 * q

double cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) ab += double{a[i]} * b[i], aa += double{a[i]} * a[i], bb += double{b[i]} * b[i];
  return ab / std::sqrt(aa * bb);
}

// The fixture photos as the network's input: (224,224,3) uint8 -> normalized CHW.
std::vector<float> fixture_pixels(const Encoder& enc) {
  const int s = enc.input_size();
  std::vector<float> px(kPhotos.size() * 3 * s * s);
  for (size_t i = 0; i < kPhotos.size(); ++i) {
    NpyArray a = read_npy(kFixtures + kPhotos[i] + ".input_u8.npy");
    EXPECT_EQ(a.shape, (std::vector<int64_t>{s, s, 3}));
    Image img;
    img.width = img.height = s;
    img.rgb = a.data;
    normalize_to_chw(img, enc.preprocess(), px.data() + i * 3 * s * s);
  }
  return px;
}

std::vector<std::string> imagenet_labels() {
  std::ifstream f(kShared + "/models/imagenet_labels.txt");
  std::vector<std::string> labels;
  for (std::string line; std::getline(f, line);) labels.push_back(line);
  return labels;
}

// Runs fn once per kernel level this CPU supports (portable, avx2, avx512;
// the levels above cpu_max_isa() cannot run here), then restores the level.
template <class F>
void for_each_isa(F fn) {
  const Isa before = cpu_isa();
  for (Isa level : {Isa::portable, Isa::avx2, Isa::avx512}) {
    if (level > cpu_max_isa()) continue;
    set_isa(level);
    SCOPED_TRACE(std::string("kernels: ") + isa_name(level));
    fn();
  }
  set_isa(before);
}

}  // namespace

TEST(MobileNet, V1MatchesOpenCvAndArmNnOnTwelvePhotos) {
  for_each_isa([&] {
    auto enc = load_encoder(kV1);
    ASSERT_EQ(enc->dim(), 1024);
    const std::vector<float> px = fixture_pixels(*enc);
    const int n = static_cast<int>(kPhotos.size());
    std::vector<float> out(n * 1024);
    enc->forward(px.data(), n, out.data(), 2);
    double min_cv = 1, min_arm = 1;
    for (int i = 0; i < n; ++i) {
      std::vector<float> cv = read_npy(kFixtures + kPhotos[i] + ".opencv_f32.npy").to_float();
      std::vector<float> arm = read_npy(kFixtures + kPhotos[i] + ".armnn_u8.npy").to_float();
      ASSERT_EQ(cv.size(), 1024u);
      ASSERT_EQ(arm.size(), 1024u);
      for (float& v : arm) v *= kArmnnScale;
      const double c_cv = cosine(out.data() + i * 1024, cv.data(), 1024);
      const double c_arm = cosine(out.data() + i * 1024, arm.data(), 1024);
      EXPECT_GE(c_cv, 0.9999) << kPhotos[i];
      EXPECT_GE(c_arm, 0.998) << kPhotos[i];
      min_cv = std::min(min_cv, c_cv);
      min_arm = std::min(min_arm, c_arm);
      // The float value itself, not a rescaled one: the same magnitude as OpenCV's.
      double max_diff = 0, max_ref = 0;
      for (int j = 0; j < 1024; ++j) {
        max_diff = std::max<double>(max_diff, std::fabs(out[i * 1024 + j] - cv[j]));
        max_ref = std::max<double>(max_ref, std::fabs(cv[j]));
      }
      EXPECT_LT(max_diff, 1e-3 * max_ref) << kPhotos[i];
    }
    std::printf("[          ] V1, 12 photos, %s kernels: min cosine %.9f vs OpenCV f32 (1 - cos = %.1e), %.6f vs Arm NN uint8\n",
                isa_name(cpu_isa()), min_cv, 1 - min_cv, min_arm);
  });
}

TEST(MobileNet, BatchAndThreadingDoNotChangeTheResult) {
  auto net = MobileNet::load(kV1);
  const std::vector<float> px = fixture_pixels(*net);
  const int n = 5, d = net->dim(), img = 3 * 224 * 224;
  std::vector<float> batch(n * d), single(d);
  net->forward(px.data(), n, batch.data(), 2);  // two threads, two images each, then one split across both
  // With the convs' weights packed (pmatmul: packed_gemm_preferred(), the avx2
  // level) every output is the same sequence of operations whatever the batch
  // and the split: bit-identical. Through sgemm: equal to rounding.
  const bool packed = packed_gemm_preferred();
  for (int i = 0; i < n; ++i)
    for (int threads : {1, 2, 3}) {  // one image: every layer split across the threads
      net->forward(px.data() + i * img, 1, single.data(), threads);
      for (int j = 0; j < d; ++j) {
        if (packed)
          ASSERT_EQ(single[j], batch[i * d + j]) << "image " << i << " threads " << threads;
        else
          ASSERT_NEAR(single[j], batch[i * d + j], 1e-4f) << "image " << i << " threads " << threads;
      }
    }
}

TEST(MobileNet, EncoderInterfaceAndFingerprint) {
  auto enc = load_encoder(kV1);
  EXPECT_EQ(enc->name(), "mobilenet_v1");
  EXPECT_EQ(enc->input_size(), 224);
  EXPECT_EQ(enc->preprocess().describe(), PreprocessConfig::mobilenet().describe());
  // models/README.md lists the file's sha256.
  EXPECT_EQ(enc->fingerprint(), "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319|" +
                                    PreprocessConfig::mobilenet().describe());
  auto v2 = MobileNet::load(kV2);
  EXPECT_EQ(v2->name(), "mobilenet_v2");
  EXPECT_EQ(v2->dim(), 1280);
  EXPECT_EQ(v2->output_dim(), 1001);
  EXPECT_EQ(v2->embedding_tensor(), "MobilenetV2/Logits/AvgPool");
  EXPECT_EQ(v2->fingerprint().substr(0, 64), "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776");
}

TEST(MobileNet, LoadEncoderRejectsWhatItCannotRead) {
  test::TempDir dir;
  auto message = [](const std::string& path) {
    try {
      load_encoder(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  std::ofstream(dir / "notes.txt") << "not a model";
  EXPECT_NE(message(dir / "notes.txt").find("not a model vismem reads"), std::string::npos);
  EXPECT_NE(message(dir / "missing.tflite").find("cannot open"), std::string::npos);
  EXPECT_NE(message(dir.path.string()).find("config.json"), std::string::npos);
}

// The photos are unambiguous; the expected labels are what a person would say,
// written down before looking at the model's output.
TEST(MobileNet, V2ClassifiesTheFixturePhotosAsTheirObviousLabels) {
  for_each_isa([&] {
    auto net = MobileNet::load(kV2);
    const std::vector<std::string> labels = imagenet_labels();
    ASSERT_EQ(labels.size(), 1001u);
    const std::vector<float> px = fixture_pixels(*net);
    const int n = static_cast<int>(kPhotos.size()), c = net->output_dim();
    std::vector<float> probs(n * c);
    net->run_full(px.data(), n, probs.data(), 2);
    auto top1 = [&](int i) {
      const float* p = probs.data() + i * c;
      return labels[std::max_element(p, p + c) - p];
    };
    for (int i = 0; i < n; ++i) {
      double sum = 0;
      for (int j = 0; j < c; ++j) sum += probs[i * c + j];
      EXPECT_NEAR(sum, 1.0, 1e-4);
      std::printf("[          ] V2 %-26s -> %s\n", kPhotos[i].c_str(), top1(i).c_str());
    }
    auto is = [&](int i, const std::string& word) { return top1(i).find(word) != std::string::npos; };
    EXPECT_TRUE(is(3, "military uniform"));  // grace_hopper: Grace Hopper in US Navy uniform
    EXPECT_TRUE(is(2, "dragonfly"));
    for (int i : {8, 9, 10}) EXPECT_TRUE(is(i, "hotdog")) << kPhotos[i];
    for (int i : {1, 4, 5}) EXPECT_TRUE(is(i, "cat")) << kPhotos[i];
    EXPECT_TRUE(is(11, "daisy"));  // ImageNet has no sunflower; daisy is its yellow-rayed flower
    // Dog photos: any of ImageNet's 118 dog breeds (lines 152..269 of the 1001-label file).
    for (int i : {6, 7}) {
      const float* p = probs.data() + i * c;
      const long k = std::max_element(p, p + c) - p;
      EXPECT_TRUE(k >= 152 && k <= 269) << kPhotos[i] << " -> " << labels[k];
    }
    // The bird photo: a small songbird (Coral's bird.bmp is a chickadee).
    EXPECT_TRUE(is(0, "chickadee") || is(0, "junco") || is(0, "jay") || is(0, "finch")) << top1(0);

    // The embedding is the 1280-d pool the classifier reads: run_full's
    // probabilities follow from forward()'s output through the model's logits layer.
    std::vector<float> emb(n * 1280);
    net->forward(px.data(), n, emb.data(), 2);
    const tflite::Model m = tflite::read_model(kV2);
    const tflite::Operator* logits = nullptr;
    for (const tflite::Operator& op : m.operators)
      if (op.code == tflite::op::conv_2d && m.tensors[op.inputs[0]].name == net->embedding_tensor()) logits = &op;
    ASSERT_NE(logits, nullptr);
    const std::vector<float> w = tflite::dequantize(m, logits->inputs[1]);  // [1001, 1, 1, 1280]
    const std::vector<float> b = tflite::dequantize(m, logits->inputs[2]);  // [1001]
    ASSERT_EQ(w.size(), 1001u * 1280);
    for (int i = 0; i < n; ++i) {
      std::vector<double> e(c);
      double sum = 0, mx = -1e30;
      for (int k = 0; k < c; ++k) {
        e[k] = b[k];
        for (int j = 0; j < 1280; ++j) e[k] += double{w[size_t(k) * 1280 + j]} * emb[i * 1280 + j];
        mx = std::max(mx, e[k]);
      }
      for (int k = 0; k < c; ++k) sum += e[k] = std::exp(e[k] - mx);
      for (int k = 0; k < c; ++k) ASSERT_NEAR(probs[i * c + k], e[k] / sum, 1e-4) << kPhotos[i] << " class " << k;
    }
  });
}

// The opt-in int8 mode: the 1x1 convs as int8 GEMMs. Its embeddings stay close
// to the float32 ones and to Arm NN's uint8 network; V2 keeps the float
// model's top-1 labels (up to near ties); the fingerprint tells it apart.
TEST(MobileNet, Int8StaysCloseToFloatAndKeepsTheLabels) {
  std::vector<std::vector<float>> per_level;
  for_each_isa([&] {
    auto f32 = load_encoder(kV1);
    auto i8 = load_encoder(kV1, Precision::int8);
    EXPECT_EQ(i8->precision(), Precision::int8);
    EXPECT_EQ(f32->precision(), Precision::f32);
    EXPECT_EQ(i8->fingerprint(), f32->fingerprint() + "|int8|a8");  // a8: 8-bit activations
    const std::vector<float> px = fixture_pixels(*f32);
    const int n = static_cast<int>(kPhotos.size());
    std::vector<float> a(n * 1024), b(n * 1024), b1(1024);
    f32->forward(px.data(), n, a.data(), 2);
    i8->forward(px.data(), n, b.data(), 2);
    // Batch and threads move the result only within int8's own noise: the float
    // layers' last-bit differences between splits can flip a rounding of the
    // dynamic quantization (float32 itself agrees to 1e-4 across splits).
    i8->forward(px.data() + 3 * 224 * 224 * 4, 1, b1.data(), 1);
    EXPECT_GT(cosine(b1.data(), b.data() + 4 * 1024, 1024), 0.9995);
    // With the float conv on packed weights (the avx2 level) there is no such
    // difference left: every layer computes each pixel the same way in any split.
    if (packed_gemm_preferred()) {
      EXPECT_EQ(b1, std::vector<float>(b.begin() + 4 * 1024, b.begin() + 5 * 1024));
    }
    double min_f32 = 1, min_arm = 1;
    for (int i = 0; i < n; ++i) {
      std::vector<float> arm = read_npy(kFixtures + kPhotos[i] + ".armnn_u8.npy").to_float();
      for (float& v : arm) v *= kArmnnScale;
      min_f32 = std::min(min_f32, cosine(a.data() + i * 1024, b.data() + i * 1024, 1024));
      min_arm = std::min(min_arm, cosine(b.data() + i * 1024, arm.data(), 1024));
    }
    std::printf("[          ] V1 int8, %s kernels: min cosine %.5f vs float32, %.5f vs Arm NN uint8\n",
                isa_name(cpu_isa()), min_f32, min_arm);
    // 8-bit activations (every V1 layer gets them): 0.99985 here; 7-bit ones gave 0.99958.
    EXPECT_GE(min_f32, 0.9997);
    EXPECT_GE(min_arm, 0.998);
    per_level.push_back(b);

    auto v2 = MobileNet::load(kV2), v2q = MobileNet::load(kV2, Precision::int8);
    EXPECT_NE(v2q->summary().find("int8"), std::string::npos);
    EXPECT_EQ(v2->summary().find("int8"), std::string::npos);
    const int c = v2->output_dim();
    std::vector<float> p(n * c), q(n * c);
    v2->run_full(px.data(), n, p.data(), 2);
    v2q->run_full(px.data(), n, q.data(), 2);
    // int8's top-1 is among float32's top 3 (near ties, e.g. two cat breeds, may swap).
    int same = 0;
    for (int i = 0; i < n; ++i) {
      std::vector<int> order(c);
      for (int k = 0; k < c; ++k) order[k] = k;
      std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                        [&](int x, int y) { return p[i * c + x] > p[i * c + y]; });
      const int top8 = static_cast<int>(std::max_element(q.begin() + i * c, q.begin() + (i + 1) * c) - q.begin()) - i * c;
      EXPECT_TRUE(top8 == order[0] || top8 == order[1] || top8 == order[2]) << kPhotos[i];
      same += top8 == order[0];
    }
    EXPECT_GE(same, n - 2);
  });
  // The int8 sums are exact at every level; the float layers around them round
  // differently per level, so levels agree within int8's own noise (as for
  // batch and threads above), not bit for bit.
  for (size_t l = 1; l < per_level.size(); ++l)
    for (size_t i = 0; i < kPhotos.size(); ++i)
      EXPECT_GE(cosine(per_level[0].data() + i * 1024, per_level[l].data() + i * 1024, 1024), 0.9995);
  EXPECT_THROW(load_encoder(kV1, parse_precision("int4")), Error);
}

// ---- the hand-built network vs a plain-loop reading of TFLite's operator definitions ----

namespace {

struct Ref {  // NHWC, N = 1
  int h, w, c;
  std::vector<float> v;
  float& at(int y, int x, int ch) { return v[(static_cast<size_t>(y) * w + x) * c + ch]; }
};

float clampf(float x, float lo, float hi) { return std::min(std::max(x, lo), hi); }

// TF SAME: out = ceil(in / stride), pad_total = max((out-1)*stride + k - in, 0), pad_before = pad_total / 2.
int same_out(int in, int s) { return (in + s - 1) / s; }
int same_pad(int in, int k, int s) { return std::max((same_out(in, s) - 1) * s + k - in, 0) / 2; }

}  // namespace

TEST(MobileNet, SmallNetworkMatchesAPlainLoopReference) {
  for_each_isa([&] {
    const test::ModelSpec spec = test::small_net();
    auto net = MobileNet::load(test::build_model(spec), "small.tflite");
    ASSERT_EQ(net->input_size(), 6);
    ASSERT_EQ(net->dim(), 4);
    ASSERT_EQ(net->output_dim(), 5);
    EXPECT_EQ(net->embedding_tensor(), "pool");

    // Weights straight from the spec's bytes, dequantized here by the schema's formula.
    auto floats = [&](int buffer) {
      std::vector<float> f(spec.buffers[buffer].size() / 4);
      std::memcpy(f.data(), spec.buffers[buffer].data(), f.size() * 4);
      return f;
    };
    std::vector<float> conv_w, conv_b, dw_w;
    for (uint8_t q : spec.buffers[1]) conv_w.push_back((q - 128) * 0.02f);  // [4][3][3][3]
    for (size_t i = 0; i < 4; ++i) {
      int32_t q;
      std::memcpy(&q, spec.buffers[2].data() + 4 * i, 4);
      conv_b.push_back(q * 0.001f);
    }
    const float dw_scale[4] = {0.05f, 0.1f, 0.02f, 0.07f};
    const int dw_zp[4] = {0, 1, -2, 3};
    for (size_t i = 0; i < spec.buffers[3].size(); ++i)  // [3][3][4], channel = i % 4
      dw_w.push_back((static_cast<int8_t>(spec.buffers[3][i]) - dw_zp[i % 4]) * dw_scale[i % 4]);
    const std::vector<float> dw_b = floats(4), fc_w = floats(5), fc_b = floats(6);

    const int n = 3;
    const std::vector<float> pixels = test::pseudo_random(n * 3 * 6 * 6, 99);
    std::vector<float> emb(n * 4), probs(n * 5);
    net->forward(pixels.data(), n, emb.data(), 2);
    net->run_full(pixels.data(), n, probs.data(), 2);

    for (int i = 0; i < n; ++i) {
      Ref in{6, 6, 3, std::vector<float>(6 * 6 * 3)};
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 6; ++x)
          for (int ch = 0; ch < 3; ++ch) in.at(y, x, ch) = pixels[((i * 3 + ch) * 6 + y) * 6 + x];
      // CONV_2D 3x3 stride 2 SAME, RELU6
      const int oh = same_out(6, 2), pad = same_pad(6, 3, 2);
      ASSERT_EQ(pad, 0);  // the asymmetric case: all padding after
      Ref conv{oh, oh, 4, std::vector<float>(oh * oh * 4)};
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < oh; ++x)
          for (int o = 0; o < 4; ++o) {
            float acc = conv_b[o];
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                const int iy = y * 2 - pad + ky, ix = x * 2 - pad + kx;
                if (iy < 0 || iy >= 6 || ix < 0 || ix >= 6) continue;
                for (int ch = 0; ch < 3; ++ch) acc += in.at(iy, ix, ch) * conv_w[((o * 3 + ky) * 3 + kx) * 3 + ch];
              }
            conv.at(y, x, o) = clampf(acc, 0, 6);
          }
      // DEPTHWISE 3x3 stride 1 SAME (pad 1 on each side), no activation; ADD + RELU; 3x3 VALID mean.
      Ref dw = conv;
      std::vector<float> pool(4, 0.0f);
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 3; ++x)
          for (int ch = 0; ch < 4; ++ch) {
            float acc = dw_b[ch];
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                const int iy = y - 1 + ky, ix = x - 1 + kx;
                if (iy >= 0 && iy < 3 && ix >= 0 && ix < 3) acc += conv.at(iy, ix, ch) * dw_w[(ky * 3 + kx) * 4 + ch];
              }
            dw.at(y, x, ch) = acc;
            pool[ch] += std::max(conv.at(y, x, ch) + acc, 0.0f) / 9;
          }
      for (int ch = 0; ch < 4; ++ch) EXPECT_NEAR(emb[i * 4 + ch], pool[ch], 1e-5) << "image " << i << " channel " << ch;
      // 1x1 conv to 5 logits, softmax.
      std::vector<double> e(5);
      double sum = 0;
      for (int o = 0; o < 5; ++o) {
        double logit = fc_b[o];
        for (int ch = 0; ch < 4; ++ch) logit += pool[ch] * fc_w[o * 4 + ch];
        sum += e[o] = std::exp(logit);
      }
      for (int o = 0; o < 5; ++o) EXPECT_NEAR(probs[i * 5 + o], e[o] / sum, 1e-5) << "image " << i << " class " << o;
    }
  });
}
