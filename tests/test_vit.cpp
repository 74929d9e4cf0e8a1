// DINOv2 and CLIP ViTs against HF transformers outputs (fixtures/dinov2_tiny,
// fixtures/clip_tiny_f16), plus the fast math they rely on.
#include "vit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpu.h"
#include "error.h"
#include "fastmath.h"
#include "npy.h"
#include "vit_kernels.h"

namespace fs = std::filesystem;
using vismem::Error;

namespace {

// ../shared, or VISMEM_SHARED_DIR from the environment (device_bundle carries the fixtures elsewhere).
const std::string kFix = std::string(std::getenv("VISMEM_SHARED_DIR") ? std::getenv("VISMEM_SHARED_DIR")
                                                                        : VISMEM_SHARED_DIR) + "/fixtures";
constexpr double kTol = 1e-4;  // fixtures/README.md: max|ours - ref| / max|ref|

struct Arr {
  std::vector<int64_t> shape;
  std::vector<float> v;
};
Arr load(const std::string& path) {
  vismem::NpyArray a = vismem::read_npy(path);
  return {a.shape, a.to_float()};
}

double rel_err(const std::vector<float>& ours, const std::vector<float>& ref) {
  EXPECT_EQ(ours.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(ours.size(), ref.size()); ++i) {
    num = std::max(num, std::fabs(double(ours[i]) - ref[i]));
    den = std::max(den, std::fabs(double(ref[i])));
  }
  return den > 0 ? num / den : num;
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("vismem_vit_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST(FastMath, ExpAndErfAccuracy) {
  double exp_rel = 0, erf_abs = 0, gelu_abs = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    const float xf = static_cast<float>(x);
    exp_rel = std::max(exp_rel, std::fabs(vismem::fast_exp(xf) - std::exp(double(xf))) / std::exp(double(xf)));
  }
  for (double x = -8.0; x <= 8.0; x += 0.0001) {
    const float xf = static_cast<float>(x);
    erf_abs = std::max(erf_abs, std::fabs(vismem::fast_erf(xf) - std::erf(double(xf))));
    const double g = 0.5 * xf * (1.0 + std::erf(xf / std::sqrt(2.0)));
    gelu_abs = std::max(gelu_abs, std::fabs(vismem::gelu_erf(xf) - g));
  }
  std::printf("fast_exp max rel err %.3g, fast_erf max abs err %.3g, gelu max abs err %.3g\n", exp_rel, erf_abs,
              gelu_abs);
  EXPECT_LT(exp_rel, 2e-7);
  EXPECT_LT(erf_abs, 5e-7);
  EXPECT_LT(gelu_abs, 2e-6);
  EXPECT_EQ(vismem::fast_exp(-1000.0f) < 1e-37f, true);  // clamped, not garbage
  EXPECT_NEAR(vismem::quick_gelu(2.0f), 2.0 / (1.0 + std::exp(-3.404)), 1e-6);
}

TEST(Bicubic, SameSizeIsIdentityAndConstantsStay) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> in(5 * 6 * 3), out(in.size());
  for (auto& x : in) x = nd(rng);
  vismem::resize_bicubic(in.data(), 5, 6, 3, out.data(), 5, 6, false);
  EXPECT_EQ(in, out);
  // Both kernels' weights sum to one: a constant grid stays constant when resized.
  std::vector<float> cst(37 * 37 * 2, 0.25f), o16(16 * 16 * 2), o50(50 * 50 * 2);
  for (bool aa : {false, true}) {
    vismem::resize_bicubic(cst.data(), 37, 37, 2, o16.data(), 16, 16, aa);
    vismem::resize_bicubic(cst.data(), 37, 37, 2, o50.data(), 50, 50, aa);
    for (float v : o16) EXPECT_NEAR(v, 0.25f, 1e-6);
    for (float v : o50) EXPECT_NEAR(v, 0.25f, 1e-6);
  }
}

TEST(Dinov2, MatchesHFAtEveryFixtureSize) {
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/dinov2_tiny");
  EXPECT_EQ(m.config.hidden, 64);
  EXPECT_EQ(m.config.grid(), 5);
  for (int s : {70, 56, 42}) {
    const Arr in = load(kFix + "/dinov2_tiny/input_" + std::to_string(s) + ".npy");
    const Arr pooler = load(kFix + "/dinov2_tiny/pooler_" + std::to_string(s) + ".npy");
    const Arr hidden = load(kFix + "/dinov2_tiny/last_hidden_" + std::to_string(s) + ".npy");
    ASSERT_EQ(in.shape, (std::vector<int64_t>{3, 3, s, s}));
    const int n = static_cast<int>(in.shape[0]);
    const vismem::VitOutputs o = vismem::vit_forward(m, in.v.data(), n, s, s, 1, /*want_last_hidden=*/true);
    ASSERT_EQ(int64_t(o.last_hidden.size()), hidden.shape[0] * hidden.shape[1] * hidden.shape[2]);
    const double e_pool = rel_err(o.pooler, pooler.v), e_hid = rel_err(o.last_hidden, hidden.v);
    const double e_emb = rel_err(o.embedding, pooler.v);
    std::printf("dinov2_tiny %dpx: pooler rel err %.3g, last_hidden rel err %.3g\n", s, e_pool, e_hid);
    EXPECT_LT(e_pool, kTol) << s;
    EXPECT_LT(e_hid, kTol) << s;
    EXPECT_LT(e_emb, kTol) << s;
    // The embedding-only path skips the last block's non-CLS work: same pooler.
    std::vector<float> emb(size_t(n) * 64);
    vismem::vit_embed(m, in.v.data(), n, s, s, emb.data(), 1);
    EXPECT_LT(rel_err(emb, pooler.v), kTol) << s;
  }
}

TEST(Dinov2, ThreadsAndBatchingGiveTheSameEmbeddings) {
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/dinov2_tiny");
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  const Arr ref = load(kFix + "/dinov2_tiny/pooler_56.npy");
  // 3 images: threads 1 (serial), 2 (images split across threads), 4 (threads
  // share each image), and every split forced.
  for (int threads : {1, 2, 4}) {
    std::vector<float> emb(3 * 64);
    vismem::vit_embed(m, in.v.data(), 3, 56, 56, emb.data(), threads);
    EXPECT_LT(rel_err(emb, ref.v), kTol) << threads;
  }
  for (auto split : {vismem::VitSplit::images, vismem::VitSplit::tokens, vismem::VitSplit::blas}) {
    std::vector<float> emb(3 * 64);
    vismem::vit_embed(m, in.v.data(), 3, 56, 56, emb.data(), 3, split);
    EXPECT_LT(rel_err(emb, ref.v), kTol) << int(split);
  }
  // One image at a time equals the batch.
  std::vector<float> one(64);
  vismem::vit_embed(m, in.v.data() + 2 * 3 * 56 * 56, 1, 56, 56, one.data(), 1);
  EXPECT_LT(rel_err(one, std::vector<float>(ref.v.begin() + 128, ref.v.end())), kTol);
}

TEST(Dinov2, EncoderInterface) {
  auto enc = vismem::load_vit_encoder(kFix + "/dinov2_tiny");
  EXPECT_EQ(enc->name(), "dinov2");
  EXPECT_EQ(enc->dim(), 64);
  EXPECT_EQ(enc->input_size(), 224);  // the DINOv2 preprocess crop; the 5x5 grid is interpolated to 16x16
  EXPECT_EQ(enc->input_size(), enc->preprocess().crop);
  const std::string fp = enc->fingerprint();
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp, vismem::load_vit_encoder(kFix + "/dinov2_tiny")->fingerprint());
  EXPECT_NE(fp, vismem::load_vit_encoder(kFix + "/clip_tiny_f16")->fingerprint());
  // Encoder::forward at 224 equals the lower-level call at 224.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> px(2 * 3 * 224 * 224);
  for (auto& x : px) x = nd(rng);
  std::vector<float> out(2 * 64);
  enc->forward(px.data(), 2, out.data(), 2);
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/dinov2_tiny");
  const vismem::VitOutputs o = vismem::vit_forward(m, px.data(), 2, 224, 224, 1);
  EXPECT_LT(rel_err(out, o.embedding), 1e-6);
  for (float v : out) EXPECT_TRUE(std::isfinite(v));
}

TEST(Clip, MatchesHF) {
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/clip_tiny_f16");
  EXPECT_EQ(m.config.family, vismem::VitConfig::Family::clip);
  EXPECT_EQ(m.config.proj_dim, 24);
  EXPECT_EQ(m.config.act, vismem::VitConfig::Act::quick_gelu);
  const Arr in = load(kFix + "/clip_tiny_f16/input_48.npy");
  const Arr pooler = load(kFix + "/clip_tiny_f16/pooler_48.npy");
  const Arr embeds = load(kFix + "/clip_tiny_f16/image_embeds_48.npy");
  const int n = static_cast<int>(in.shape[0]);
  const vismem::VitOutputs o = vismem::vit_forward(m, in.v.data(), n, 48, 48, 1);
  const double e_pool = rel_err(o.pooler, pooler.v), e_emb = rel_err(o.embedding, embeds.v);
  std::printf("clip_tiny_f16 48px: pooler rel err %.3g, image_embeds rel err %.3g\n", e_pool, e_emb);
  EXPECT_LT(e_pool, kTol);
  EXPECT_LT(e_emb, kTol);

  auto enc = vismem::load_vit_encoder(kFix + "/clip_tiny_f16");
  EXPECT_EQ(enc->name(), "clip");
  EXPECT_EQ(enc->dim(), 24);
  EXPECT_EQ(enc->input_size(), 48);
  std::vector<float> out(size_t(n) * 24);
  enc->forward(in.v.data(), n, out.data(), 2);
  EXPECT_LT(rel_err(out, embeds.v), kTol);
  // CLIP does not interpolate (HF's default): another size is a clear error.
  std::vector<float> px(3 * 64 * 64, 0.0f);
  EXPECT_THROW(vismem::vit_forward(m, px.data(), 1, 64, 64), Error);
}

TEST(VitLoad, ConfigAndShapeErrors) {
  TempDir dir;
  const fs::path src = kFix + "/dinov2_tiny";
  fs::copy_file(src / "model.safetensors", dir.path / "model.safetensors");
  auto config = [&](const std::string& text) {
    std::ofstream(dir.path / "config.json") << text;
  };
  // The checkpoint's shapes disagree with what the config implies: names the key.
  config(R"({"model_type": "dinov2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
            "patch_size": 14, "image_size": 84})");
  try {
    vismem::load_vit_model(dir.path.string());
    ADD_FAILURE() << "position embeddings for a 6x6 grid should not load from a 5x5 checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embeddings.position_embeddings"), std::string::npos) << e.what();
  }
  config(R"({"model_type": "dinov2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4,
            "patch_size": 14, "image_size": 70})");
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);  // no layer 3
  config(R"({"model_type": "dinov2", "hidden_size": 64, "num_attention_heads": 5, "num_hidden_layers": 3})");
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);  // 64 % 5
  config(R"({"model_type": "dinov2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
            "patch_size": 14, "image_size": 70, "hidden_act": "mish"})");
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);
  config(R"({"model_type": "bert"})");
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);
  config("{not json");
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);
  // A good config with a truncated checkpoint.
  fs::copy_file(src / "config.json", dir.path / "config.json", fs::copy_options::overwrite_existing);
  EXPECT_NO_THROW(vismem::load_vit_model(dir.path.string()));
  fs::resize_file(dir.path / "model.safetensors", fs::file_size(dir.path / "model.safetensors") - 100);
  EXPECT_THROW(vismem::load_vit_model(dir.path.string()), Error);
  EXPECT_THROW(vismem::load_vit_model((dir.path / "missing").string()), Error);
}

TEST(VitConfig, ParsesTheHFKinds) {
  using vismem::VitConfig;
  VitConfig g = VitConfig::from_json(R"({"architectures": ["Dinov2Model"], "hidden_size": 1536,
      "num_attention_heads": 24, "num_hidden_layers": 40, "mlp_ratio": 4, "use_swiglu_ffn": true})");
  EXPECT_TRUE(g.swiglu);
  EXPECT_EQ(g.mlp, 4096);  // HF: (int(6144 * 2 / 3) + 7) // 8 * 8
  VitConfig r = VitConfig::from_json(R"({"model_type": "dinov2_with_registers", "hidden_size": 384,
      "num_attention_heads": 6, "image_size": 518})");
  EXPECT_EQ(r.registers, 4);
  EXPECT_EQ(r.tokens(224, 224), 1 + 4 + 256);
  VitConfig v = VitConfig::from_json(R"({"model_type": "clip_vision_model", "architectures":
      ["CLIPVisionModelWithProjection"], "hidden_size": 768, "projection_dim": 512, "patch_size": 16})");
  EXPECT_EQ(v.family, VitConfig::Family::clip);
  EXPECT_EQ(v.dim(), 512);
  EXPECT_EQ(v.act, VitConfig::Act::quick_gelu);
  EXPECT_FLOAT_EQ(v.ln_eps, 1e-5f);
  VitConfig bare = VitConfig::from_json(R"({"architectures": ["CLIPVisionModel"]})");
  EXPECT_EQ(bare.dim(), 768);  // no projection: the pooler is the embedding
}

TEST(VitRegisters, RandomModelRunsWithRegisterTokens) {
  // No HF fixture exists for registers; this checks the token layout end to end:
  // registers change the CLS output and the last_hidden has 1 + R + G rows.
  vismem::VitConfig c = vismem::VitConfig::from_json(R"({"model_type": "dinov2_with_registers",
      "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 70,
      "num_register_tokens": 4})");
  vismem::VitModel m = vismem::random_vit_model(c, 11);
  std::vector<float> px(3 * 42 * 42, 0.5f);
  const vismem::VitOutputs o = vismem::vit_forward(m, px.data(), 1, 42, 42, 1, true);
  EXPECT_EQ(o.last_hidden.size(), size_t(1 + 4 + 9) * 32);
  vismem::VitModel m0 = m;
  for (auto& x : m0.weights.registers) x = 0.0f;
  const vismem::VitOutputs o0 = vismem::vit_forward(m0, px.data(), 1, 42, 42, 1);
  EXPECT_GT(rel_err(o.embedding, o0.embedding), 1e-4);
}

TEST(VitSwiGLU, SplitsAgree) {
  // ViT-g's SwiGLU MLP has no HF fixture; this holds its multi-threaded split
  // (the gate pairs column j with M + j) to the single-threaded pass.
  vismem::VitConfig c = vismem::VitConfig::from_json(R"({"model_type": "dinov2", "hidden_size": 48,
      "num_attention_heads": 3, "num_hidden_layers": 2, "image_size": 70, "use_swiglu_ffn": true})");
  ASSERT_EQ(c.mlp, 128);  // (int(192 * 2 / 3) + 7) // 8 * 8
  const vismem::VitModel m = vismem::random_vit_model(c, 5);
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  std::vector<float> px(2 * 3 * 56 * 56);
  for (auto& x : px) x = nd(rng);
  const vismem::VitOutputs ref = vismem::vit_forward(m, px.data(), 2, 56, 56, 1, true);
  for (auto split : {vismem::VitSplit::tokens, vismem::VitSplit::images}) {
    std::vector<float> emb(2 * 48);
    vismem::vit_embed(m, px.data(), 2, 56, 56, emb.data(), 3, split);
    EXPECT_LT(rel_err(emb, ref.embedding), 1e-5) << int(split);
  }
  for (float v : ref.last_hidden) ASSERT_TRUE(std::isfinite(v));
}

namespace {

// Restores the kernel level a test forced.
struct IsaGuard {
  vismem::Isa saved = vismem::cpu_isa();
  ~IsaGuard() { vismem::set_isa(saved); }
};

std::vector<vismem::Isa> runnable_levels() {
  std::vector<vismem::Isa> v;
  for (int l = 0; l <= int(vismem::cpu_max_isa()); ++l) v.push_back(vismem::Isa(l));
  if (vismem::cpu_max_isa() < vismem::Isa::avx512)
    std::printf("note: the avx512 kernels are compiled but this CPU cannot run them (%s)\n",
                vismem::cpu_description().c_str());
  return v;
}

}  // namespace

TEST(VitIsa, EveryLevelMatchesHF) {
  // The same fixtures at each level the CPU runs (portable always, avx2 and
  // avx512 where present), each forced through set_isa as VISMEM_ISA would.
  IsaGuard guard;
  const vismem::VitModel dino = vismem::load_vit_model(kFix + "/dinov2_tiny");
  const vismem::VitModel clip = vismem::load_vit_model(kFix + "/clip_tiny_f16");
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  const Arr hidden = load(kFix + "/dinov2_tiny/last_hidden_56.npy");
  const Arr cin = load(kFix + "/clip_tiny_f16/input_48.npy");
  const Arr cemb = load(kFix + "/clip_tiny_f16/image_embeds_48.npy");
  for (vismem::Isa level : runnable_levels()) {
    vismem::set_isa(level);
    ASSERT_EQ(vismem::vit_kernels().isa, level);
    const vismem::VitOutputs o = vismem::vit_forward(dino, in.v.data(), 3, 56, 56, 2, true);
    const vismem::VitOutputs c = vismem::vit_forward(clip, cin.v.data(), int(cin.shape[0]), 48, 48, 1);
    const double e_hid = rel_err(o.last_hidden, hidden.v), e_clip = rel_err(c.embedding, cemb.v);
    std::printf("%s: dinov2 last_hidden rel err %.3g, clip image_embeds rel err %.3g\n", vismem::isa_name(level),
                e_hid, e_clip);
    EXPECT_LT(e_hid, kTol) << vismem::isa_name(level);
    EXPECT_LT(e_clip, kTol) << vismem::isa_name(level);
  }
}

TEST(VitIsa, KernelsMatchADoubleReference) {
  // Each level's kernels against the formulas in double precision, on rows
  // whose length is not a multiple of any vector width (tails included).
  const int rows = 5, n = 203;
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> x(size_t(rows) * n), g(n), b(2 * n), t(x.size());
  for (auto* v : {&x, &g, &b, &t})
    for (auto& e : *v) e = nd(rng);
  for (vismem::Isa level : runnable_levels()) {
    const vismem::VitKernels& k = vismem::vit_kernels(level);
    ASSERT_EQ(k.isa, level);
    double ln = 0, sm = 0, ge = 0, res = 0, sw = 0;
    std::vector<float> y(x.size());
    k.layer_norm(x.data(), n, rows, n, g.data(), b.data(), 1e-6f, y.data(), n);
    std::vector<float> a = x;
    k.softmax(a.data(), rows, n);
    std::vector<float> h = x;
    k.bias_act(h.data(), n, rows, 0, n, b.data(), vismem::VitAct::gelu);
    std::vector<float> r = x;
    k.residual(r.data(), n, t.data(), n, rows, 0, n, b.data(), g.data());
    std::vector<float> s(size_t(rows) * 2 * n);
    std::copy(x.begin(), x.end(), s.begin());
    std::copy(t.begin(), t.end(), s.begin() + x.size());  // rows 0..4 of [rows, 2n] from x then t
    std::vector<float> s0 = s;
    k.swiglu(s.data(), 0, rows, n, b.data());
    for (int i = 0; i < rows; ++i) {
      const float* xi = &x[size_t(i) * n];
      double mean = 0, var = 0, mx = -1e30, z = 0;
      for (int j = 0; j < n; ++j) mean += xi[j], mx = std::max(mx, double(xi[j]));
      mean /= n;
      for (int j = 0; j < n; ++j) var += (xi[j] - mean) * (xi[j] - mean), z += std::exp(xi[j] - mx);
      var /= n;
      for (int j = 0; j < n; ++j) {
        const size_t e = size_t(i) * n + j;
        ln = std::max(ln, std::fabs((xi[j] - mean) / std::sqrt(var + 1e-6) * g[j] + b[j] - y[e]));
        sm = std::max(sm, std::fabs(std::exp(xi[j] - mx) / z - a[e]));
        const double v = double(xi[j]) + b[j];
        ge = std::max(ge, std::fabs(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))) - h[e]));
        res = std::max(res, std::fabs(xi[j] + double(g[j]) * (double(t[e]) + b[j]) - r[e]));
        const double u = double(s0[size_t(i) * 2 * n + j]) + b[j], w = double(s0[size_t(i) * 2 * n + n + j]) + b[n + j];
        sw = std::max(sw, std::fabs(u / (1 + std::exp(-u)) * w - s[size_t(i) * 2 * n + j]) / (1 + std::fabs(u * w)));
      }
    }
    std::printf("%s: max abs err LayerNorm %.3g, softmax %.3g, GELU %.3g, residual %.3g, SwiGLU (rel) %.3g\n",
                vismem::isa_name(level), ln, sm, ge, res, sw);
    EXPECT_LT(ln, 1e-4);
    EXPECT_LT(sm, 1e-6);
    EXPECT_LT(ge, 1e-5);
    EXPECT_LT(res, 1e-4);
    EXPECT_LT(sw, 1e-5);
  }
}

TEST(VitIsa, NeverAboveTheCpu) {
  // Asking for more than the hardware has gives the best level it has: the
  // avx512 table is never handed out on a CPU without AVX-512, nor by set_isa.
  IsaGuard guard;
  EXPECT_EQ(vismem::vit_kernels(vismem::Isa::avx512).isa, vismem::cpu_max_isa());
  vismem::set_isa(vismem::Isa::avx512);
  EXPECT_EQ(vismem::vit_kernels().isa, vismem::cpu_max_isa());
  vismem::set_isa(vismem::Isa::portable);
  EXPECT_EQ(vismem::vit_kernels().isa, vismem::Isa::portable);
}

namespace {

// The 3 fixture images through model p: batched on 1 thread, batched on 2
// (each split), and one at a time on 2 threads give bit-identical embeddings.
void expect_batch_independent(const vismem::VitModel& p) {
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  std::vector<float> batch(3 * 64);
  vismem::vit_embed(p, in.v.data(), 3, 56, 56, batch.data(), 1);
  for (auto split : {vismem::VitSplit::images, vismem::VitSplit::tokens}) {
    std::vector<float> emb(3 * 64);
    vismem::vit_embed(p, in.v.data(), 3, 56, 56, emb.data(), 2, split);
    EXPECT_EQ(emb, batch) << int(split);
  }
  for (int i = 0; i < 3; ++i) {
    std::vector<float> one(64);
    vismem::vit_embed(p, in.v.data() + i * 3 * 56 * 56, 1, 56, 56, one.data(), 2);
    EXPECT_EQ(one, std::vector<float>(batch.begin() + i * 64, batch.begin() + (i + 1) * 64)) << i;
  }
  // With last_hidden every layer computes all tokens (a packed float32 model on
  // a team: every layer split by rows), on 3 threads and 2 images: as on 1.
  const vismem::VitOutputs t1 = vismem::vit_forward(p, in.v.data(), 2, 56, 56, 1, true);
  const vismem::VitOutputs t3 = vismem::vit_forward(p, in.v.data(), 2, 56, 56, 3, true);
  EXPECT_EQ(t3.last_hidden, t1.last_hidden);
  EXPECT_EQ(t3.pooler, t1.pooler);
  EXPECT_EQ(t3.embedding, t1.embedding);
  EXPECT_EQ(t1.embedding, std::vector<float>(batch.begin(), batch.begin() + 2 * 64));
}

}  // namespace

TEST(VitPacked, MatchesHFAndTheSgemmPathAtEveryLevel) {
  // The linear layers and attention on weights packed once (pmatmul), as the
  // encoder runs them where packed_gemm_preferred(): packed at the avx2 level
  // (as on an AVX2 CPU), then run at every level (the portable one runs the
  // plain C++ tiles), against the HF outputs and the sgemm path.
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2: the model is never packed here";
  vismem::set_isa(vismem::Isa::avx2);
  if (!vismem::packed_gemm_preferred()) GTEST_SKIP() << "VISMEM_PACKED=0 in the environment: nothing is packed";
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/dinov2_tiny");
  const vismem::VitModel p = vismem::pack_vit_model(m, /*keep_float=*/false);
  ASSERT_FALSE(p.weights.layers[0].qkv_p.empty());
  EXPECT_TRUE(p.weights.layers[0].qkv_w.empty());  // the float copies are freed
  const vismem::VitModel clip = vismem::pack_vit_model(vismem::load_vit_model(kFix + "/clip_tiny_f16"));
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  const Arr hidden = load(kFix + "/dinov2_tiny/last_hidden_56.npy");
  const Arr cin = load(kFix + "/clip_tiny_f16/input_48.npy");
  const Arr cemb = load(kFix + "/clip_tiny_f16/image_embeds_48.npy");
  const vismem::VitOutputs plain = vismem::vit_forward(m, in.v.data(), 3, 56, 56, 1, true);
  for (vismem::Isa level : runnable_levels()) {
    vismem::set_isa(level);
    const vismem::VitOutputs o = vismem::vit_forward(p, in.v.data(), 3, 56, 56, 2, true);
    const vismem::VitOutputs c = vismem::vit_forward(clip, cin.v.data(), int(cin.shape[0]), 48, 48, 1);
    const double e_hid = rel_err(o.last_hidden, hidden.v), e_clip = rel_err(c.embedding, cemb.v);
    const double e_sgemm = rel_err(o.last_hidden, plain.last_hidden);
    std::printf("packed %s: dinov2 last_hidden rel err %.3g (vs the sgemm path %.3g), clip image_embeds %.3g\n",
                vismem::isa_name(level), e_hid, e_sgemm, e_clip);
    EXPECT_LT(e_hid, kTol) << vismem::isa_name(level);
    EXPECT_LT(e_clip, kTol) << vismem::isa_name(level);
    EXPECT_LT(e_sgemm, 1e-5) << vismem::isa_name(level);
  }
}

TEST(VitPacked, BothPanelLayoutsGiveTheSameFloats) {
  // Packed at the avx512 level the weights are in 32-column panels for the
  // 12 x 32 tile; every tile sums each output in the same order, so the
  // embeddings are bit-identical to the 24-column ones (here the 12 x 32
  // tile runs as two 256-bit halves per vector; on an AVX-512 CPU also for real).
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2: the model is never packed here";
  vismem::set_isa(vismem::Isa::avx2);
  if (!vismem::packed_gemm_preferred()) GTEST_SKIP() << "VISMEM_PACKED=0 in the environment: nothing is packed";
  const vismem::VitModel m = vismem::load_vit_model(kFix + "/dinov2_tiny");
  const vismem::VitModel p24 = vismem::pack_vit_model(m, true, 24), p32 = vismem::pack_vit_model(m, true, 32);
  ASSERT_EQ(p24.weights.layers[0].qkv_p.cols, 24);
  ASSERT_EQ(p32.weights.layers[0].fc2_p.cols, 32);
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  for (vismem::Isa level : runnable_levels()) {
    if (level < vismem::Isa::avx2) continue;  // the plain tiles round the product first: another sum
    vismem::set_isa(level);
    const vismem::VitOutputs a = vismem::vit_forward(p24, in.v.data(), 3, 56, 56, 2, true);
    const vismem::VitOutputs b = vismem::vit_forward(p32, in.v.data(), 3, 56, 56, 2, true);
    EXPECT_EQ(a.last_hidden, b.last_hidden) << vismem::isa_name(level);
    EXPECT_EQ(a.embedding, b.embedding) << vismem::isa_name(level);
  }
}

TEST(VitPacked, AnImagesEmbeddingDoesNotDependOnItsBatchOrThreads) {
  // pmatmul's sums do not depend on the rows beside them or on the column
  // split, so an image's embedding is bit-identical alone, in a batch, on 1
  // thread or several (the sgemm path agrees only to rounding).
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2: the model is never packed here";
  vismem::set_isa(vismem::Isa::avx2);
  if (!vismem::packed_gemm_preferred()) GTEST_SKIP() << "VISMEM_PACKED=0 in the environment: nothing is packed";
  const vismem::VitModel p = vismem::pack_vit_model(vismem::load_vit_model(kFix + "/dinov2_tiny"));
  expect_batch_independent(p);
}

TEST(VitPacked, MissingOrMisSizedWeightsAreRefused) {
  // A model built by hand: no weights, or a matrix of another size than the
  // config's, is a clear error, never a read past a vector's end; packing
  // again with keep_float = false still frees the float copies.
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2: the model is never packed here";
  vismem::set_isa(vismem::Isa::avx2);
  if (!vismem::packed_gemm_preferred()) GTEST_SKIP() << "VISMEM_PACKED=0 in the environment: nothing is packed";
  vismem::VitConfig c = vismem::VitConfig::dinov2_vits14();
  c.hidden = 64, c.heads = 4, c.mlp = 128, c.layers = 1, c.image_size = 28;
  vismem::VitModel empty;
  empty.config = c;
  EXPECT_THROW(vismem::make_vit_encoder(empty), vismem::Error);
  vismem::VitModel bad = vismem::random_vit_model(c, 3);
  bad.weights.layers[0].fc1_w.resize(10);
  try {
    vismem::pack_vit_model(bad);
    ADD_FAILURE() << "a mis-sized fc1 was packed";
  } catch (const vismem::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc1 has 10 values"), std::string::npos) << e.what();
  }
  const vismem::VitModel twice = vismem::pack_vit_model(vismem::pack_vit_model(vismem::random_vit_model(c, 3)), false);
  EXPECT_TRUE(twice.weights.layers[0].fc1_w.empty());
  EXPECT_FALSE(twice.weights.layers[0].fc1_p.empty());
}

TEST(VitInt8, PackedAnImagesEmbeddingDoesNotDependOnItsBatchOrThreads) {
  // int8 linear layers quantize each row on its own and sum exactly; with the
  // float products (patch embedding, attention) packed, nothing is left that
  // depends on the rows beside an image's: bit-identical in any batch or split.
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2: the model is never packed here";
  vismem::set_isa(vismem::Isa::avx2);
  if (!vismem::packed_gemm_preferred()) GTEST_SKIP() << "VISMEM_PACKED=0 in the environment: nothing is packed";
  const vismem::VitModel p =
      vismem::pack_vit_model(vismem::quantize_vit_model(vismem::load_vit_model(kFix + "/dinov2_tiny")));
  ASSERT_FALSE(p.weights.patch_p.empty());
  ASSERT_TRUE(p.weights.layers[0].qkv_p.empty());  // the linear layers stay int8
  expect_batch_independent(p);
}

TEST(VitInt8, CloseToHFAtEveryLevel) {
  // The opt-in int8 mode (linear layers as int8 GEMMs) against the same HF
  // outputs as the float path, with the tolerance int8 allows: within 3% of
  // the largest value and a cosine above 0.999 per image.
  IsaGuard guard;
  const vismem::VitModel m8 = vismem::quantize_vit_model(vismem::load_vit_model(kFix + "/dinov2_tiny"));
  ASSERT_EQ(m8.precision, vismem::VitPrecision::int8);
  const Arr in = load(kFix + "/dinov2_tiny/input_70.npy");
  const Arr ref = load(kFix + "/dinov2_tiny/pooler_70.npy");
  for (vismem::Isa level : runnable_levels()) {
    vismem::set_isa(level);
    std::vector<float> emb(3 * 64);
    vismem::vit_embed(m8, in.v.data(), 3, 70, 70, emb.data(), 2);
    double worst = 1;
    for (int i = 0; i < 3; ++i) {
      double dot = 0, na = 0, nb = 0;
      for (int j = 0; j < 64; ++j) {
        const double a = emb[i * 64 + j], b = ref.v[i * 64 + j];
        dot += a * b, na += a * a, nb += b * b;
      }
      worst = std::min(worst, dot / std::sqrt(na * nb));
    }
    const double e = rel_err(emb, ref.v);
    std::printf("int8 %s: pooler rel err %.3g, lowest cosine %.6f\n", vismem::isa_name(level), e, worst);
    EXPECT_LT(e, 3e-2);
    EXPECT_GT(worst, 0.999);
  }
}

TEST(VitInt8, HiddenSizeNotAMultipleOfEight) {
  // The last block, when only the pooled output is wanted, computes k and v
  // for every token but q only for CLS; with int8 weights and a hidden size of
  // 12 its column ranges no longer start on qmatmul's 8-column blocks. The
  // pooler equals the one from the full last block (last_hidden wanted), on 1
  // to 3 threads, at every level.
  IsaGuard guard;
  vismem::VitConfig c = vismem::VitConfig::dinov2_vits14();
  c.hidden = 12, c.heads = 3, c.mlp = 16, c.layers = 2, c.patch = 4, c.image_size = 8;
  const vismem::VitModel m = vismem::pack_vit_model(vismem::quantize_vit_model(vismem::random_vit_model(c, 1)));
  std::vector<float> px(size_t(2) * 3 * 8 * 8);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (float& v : px) v = normal(rng);
  for (vismem::Isa level : runnable_levels()) {
    vismem::set_isa(level);
    const vismem::VitOutputs full = vismem::vit_forward(m, px.data(), 2, 8, 8, 1, true);
    for (int threads : {1, 2, 3}) {
      const vismem::VitOutputs cls = vismem::vit_forward(m, px.data(), 2, 8, 8, threads, false);
      ASSERT_EQ(cls.pooler.size(), full.pooler.size());
      for (size_t i = 0; i < cls.pooler.size(); ++i)
        EXPECT_NEAR(cls.pooler[i], full.pooler[i], 1e-4) << vismem::isa_name(level) << " threads " << threads;
    }
  }
}

TEST(VitInt8, EncoderOptInByEnvironment) {
  const std::string dir = kFix + "/dinov2_tiny";
  const std::string fp32 = vismem::load_vit_encoder(dir)->fingerprint();
  ASSERT_EQ(setenv("VISMEM_PRECISION", "int8", 1), 0);
  const std::string fp8 = vismem::load_vit_encoder(dir)->fingerprint();
  ASSERT_EQ(setenv("VISMEM_PRECISION", "int4", 1), 0);
  EXPECT_THROW(vismem::load_vit_encoder(dir), Error);
  unsetenv("VISMEM_PRECISION");
  EXPECT_EQ(fp8, fp32 + "|int8");  // a memory never mixes int8 and float embeddings
  EXPECT_EQ(vismem::load_vit_encoder(dir)->fingerprint(), fp32);
}

TEST(VitForward, KeptTeamAndArenaAcrossShapesAndAFork) {
  // The process keeps a team and an arena between passes: other shapes and
  // thread counts in between change nothing, and a fork()ed child (whose copy
  // of the team has no threads) computes the same floats and exits instead of
  // waiting forever on helpers that do not exist.
  const vismem::VitModel m = vismem::pack_vit_model(vismem::load_vit_model(kFix + "/dinov2_tiny"));
  const Arr in = load(kFix + "/dinov2_tiny/input_56.npy");
  const vismem::VitOutputs first = vismem::vit_forward(m, in.v.data(), 1, 56, 56, 2);
  (void)vismem::vit_forward(m, in.v.data(), 3, 56, 56, 4);
  (void)vismem::vit_forward(m, in.v.data(), 1, 42, 42, 2);
  (void)vismem::vit_forward(m, in.v.data(), 1, 56, 56, 3);
  const vismem::VitOutputs again = vismem::vit_forward(m, in.v.data(), 1, 56, 56, 2);
  EXPECT_EQ(again.embedding, first.embedding);
  fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(60);  // a hang fails the test instead of stalling it
    const vismem::VitOutputs c = vismem::vit_forward(m, in.v.data(), 1, 56, 56, 2);
    std::exit(c.embedding == first.embedding ? 0 : 3);  // exit(): static destructors run too
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << "): it hung or crashed";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child computed other floats";

  // exit() while another thread is in the middle of a pass on the kept team
  // and arena: nothing is freed under it (they are never destroyed).
  fflush(nullptr);
  const pid_t busy = fork();
  ASSERT_GE(busy, 0);
  if (busy == 0) {
    alarm(60);
    std::thread([&] {
      for (;;) (void)vismem::vit_forward(m, in.v.data(), 1, 56, 56, 2);
    }).detach();
    usleep(20000);
    std::exit(0);
  }
  ASSERT_EQ(waitpid(busy, &status, 0), busy);
  ASSERT_TRUE(WIFEXITED(status)) << "exit() with a pass running: signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
