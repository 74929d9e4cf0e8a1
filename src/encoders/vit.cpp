#include "vit.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include "error.h"
#include "textio.h"
#include "hash.h"
#include "linalg.h"
#include "qgemm.h"
#include "safetensors.h"
#include "team.h"
#include "vit_kernels.h"

namespace vismem {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

namespace {

int json_int(const json& j, const char* key, int def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  // image_size may be [h, w] in some configs; we support square only. Either
  // way the value is range-checked below, never narrowed.
  const json& v = j[key].is_array() && j[key].size() == 2 && j[key][0] == j[key][1] ? j[key][0] : j[key];
  if (!v.is_number_integer()) throw Error(where + ": '" + key + "' is not an integer");
  const int64_t x = v.get<int64_t>();
  if (x < 0 || x > (1 << 20)) throw Error(where + ": '" + key + "' = " + std::to_string(x) + " is out of range");
  return static_cast<int>(x);
}

double json_num(const json& j, const char* key, double def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) throw Error(where + ": '" + key + "' is not a number");
  return j[key].get<double>();
}

bool json_bool(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) throw Error(where + ": '" + key + "' is not a boolean");
  return j[key].get<bool>();
}

std::string json_str(const json& j, const char* key, const std::string& def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string()) throw Error(where + ": '" + key + "' is not a string");
  return j[key].get<std::string>();
}

VitConfig::Act parse_act(const std::string& s, const std::string& where) {
  if (s == "gelu") return VitConfig::Act::gelu;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_fast") return VitConfig::Act::gelu_tanh;
  if (s == "quick_gelu") return VitConfig::Act::quick_gelu;
  if (s == "silu" || s == "swish") return VitConfig::Act::silu;
  if (s == "relu") return VitConfig::Act::relu;
  throw Error(where + ": hidden_act '" + s + "' is not supported");
}

}  // namespace

void VitConfig::validate() const {
  auto bad = [](const std::string& what) { throw Error("ViT config: " + what); };
  if (hidden <= 0 || layers <= 0 || heads <= 0 || mlp <= 0 || patch <= 0 || channels <= 0)
    bad("sizes must be positive");
  if (hidden % heads != 0)
    bad("hidden_size " + std::to_string(hidden) + " is not a multiple of num_attention_heads " +
        std::to_string(heads));
  if (image_size < patch) bad("image_size " + std::to_string(image_size) + " is smaller than patch_size");
  if (registers < 0) bad("num_register_tokens is negative");
  if (!(ln_eps > 0)) bad("layer_norm_eps must be positive");
  if (proj_dim < 0) bad("projection_dim is negative");
  if (channels != 3) bad("num_channels " + std::to_string(channels) + " (vismem encoders take RGB)");
}

VitConfig VitConfig::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(where + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(where + ": not a JSON object");
  const std::string mt = json_str(j, "model_type", "", where);
  std::vector<std::string> archs;
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a.is_string()) archs.push_back(a.get<std::string>());
  auto has_arch = [&](const char* a) { return std::find(archs.begin(), archs.end(), a) != archs.end(); };

  // model_type decides; architectures only when model_type is absent.
  enum { unknown, dino, dino_reg, clip_full, clip_vision } kind = unknown;
  if (mt == "dinov2") kind = dino;
  else if (mt == "dinov2_with_registers") kind = dino_reg;
  else if (mt == "clip") kind = clip_full;
  else if (mt == "clip_vision_model") kind = clip_vision;
  else if (mt.empty()) {
    if (has_arch("Dinov2Model")) kind = dino;
    else if (has_arch("Dinov2WithRegistersModel")) kind = dino_reg;
    else if (has_arch("CLIPModel")) kind = clip_full;
    else if (has_arch("CLIPVisionModelWithProjection") || has_arch("CLIPVisionModel")) kind = clip_vision;
  }
  if (kind == unknown)
    throw Error(where + ": model_type '" + mt +
                "' is not a ViT vismem reads (dinov2, dinov2_with_registers, clip, clip_vision_model)");

  VitConfig c;
  if (kind == dino || kind == dino_reg) {
    // Dinov2Config / Dinov2WithRegistersConfig defaults.
    c.family = Family::dinov2;
    c.hidden = json_int(j, "hidden_size", 768, where);
    c.layers = json_int(j, "num_hidden_layers", 12, where);
    c.heads = json_int(j, "num_attention_heads", 12, where);
    const double mlp_ratio = json_num(j, "mlp_ratio", 4.0, where);
    c.patch = json_int(j, "patch_size", 14, where);
    c.image_size = json_int(j, "image_size", 224, where);
    c.channels = json_int(j, "num_channels", 3, where);
    c.ln_eps = static_cast<float>(json_num(j, "layer_norm_eps", 1e-6, where));
    c.act = parse_act(json_str(j, "hidden_act", "gelu", where), where);
    c.qkv_bias = json_bool(j, "qkv_bias", true, where);
    c.swiglu = json_bool(j, "use_swiglu_ffn", false, where);
    c.layerscale = true;
    // HF: hidden_features = int(hidden_size * mlp_ratio); SwiGLU rounds 2/3 of it up to a multiple of 8.
    const int hf = static_cast<int>(c.hidden * mlp_ratio);
    c.mlp = c.swiglu ? (static_cast<int>(hf * 2.0 / 3.0) + 7) / 8 * 8 : hf;
    if (kind == dino_reg) {
      c.registers = json_int(j, "num_register_tokens", 4, where);
      c.antialias_pos = true;
    }
  } else {
    // CLIPVisionConfig defaults; CLIPModel keeps them under vision_config and
    // projection_dim at the top level (vision_config.projection_dim is unused there).
    c.family = Family::clip;
    json v = j;
    if (kind == clip_full) {
      v = j.contains("vision_config") && j["vision_config"].is_object() ? j["vision_config"] : json::object();
    }
    c.hidden = json_int(v, "hidden_size", 768, where);
    c.mlp = json_int(v, "intermediate_size", 3072, where);
    c.layers = json_int(v, "num_hidden_layers", 12, where);
    c.heads = json_int(v, "num_attention_heads", 12, where);
    c.patch = json_int(v, "patch_size", 32, where);
    c.image_size = json_int(v, "image_size", 224, where);
    c.channels = json_int(v, "num_channels", 3, where);
    c.ln_eps = static_cast<float>(json_num(v, "layer_norm_eps", 1e-5, where));
    c.act = parse_act(json_str(v, "hidden_act", "quick_gelu", where), where);
    c.qkv_bias = true;
    c.layerscale = false;
    c.prefix = "vision_model.";
    // A bare CLIPVisionModel has no visual_projection: its embedding is the pooler.
    const bool bare = kind == clip_vision && has_arch("CLIPVisionModel") && !has_arch("CLIPVisionModelWithProjection");
    c.proj_dim = bare ? 0 : json_int(j, "projection_dim", 512, where);
  }
  c.validate();
  return c;
}

VitConfig VitConfig::dinov2_vits14() {
  VitConfig c;
  c.hidden = 384;
  c.heads = 6;
  c.mlp = 1536;
  c.image_size = 518;
  return c;
}

VitConfig VitConfig::dinov2_vitb14() {
  VitConfig c;
  c.image_size = 518;
  return c;
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

VitModel load_vit_model(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  VitModel m;
  m.config = VitConfig::from_json(read_text_file(cfg_path), cfg_path);
  m.dir = dir;
  SafeTensors st = SafeTensors::open(dir);
  m.files = st.files();
  VitConfig& c = m.config;

  // Checkpoints saved from a task model carry the backbone under a prefix.
  if (c.family == VitConfig::Family::dinov2) {
    c.prefix = st.has("embeddings.cls_token") ? "" : (st.has("dinov2.embeddings.cls_token") ? "dinov2." : "");
  } else {
    c.prefix = st.has("vision_model.embeddings.class_embedding") ? "vision_model." : "";
  }
  const int64_t D = c.hidden, M = c.mlp, C = c.channels, p = c.patch, N = int64_t(c.grid()) * c.grid();
  auto get = [&](const std::string& key, std::vector<int64_t> shape) { return st.to_float(c.prefix + key, shape); };
  auto zeros = [](int64_t k) { return std::vector<float>(static_cast<size_t>(k), 0.0f); };
  VitWeights& w = m.weights;

  if (c.family == VitConfig::Family::dinov2) {
    w.patch_w = get("embeddings.patch_embeddings.projection.weight", {D, C, p, p});
    w.patch_b = get("embeddings.patch_embeddings.projection.bias", {D});
    w.cls = get("embeddings.cls_token", {1, 1, D});
    w.pos = get("embeddings.position_embeddings", {1, N + 1, D});
    if (c.registers > 0) w.registers = get("embeddings.register_tokens", {1, c.registers, D});
    for (int i = 0; i < c.layers; ++i) {
      const std::string l = "encoder.layer." + std::to_string(i) + ".";
      VitLayerWeights L;
      L.ln1_w = get(l + "norm1.weight", {D});
      L.ln1_b = get(l + "norm1.bias", {D});
      L.qkv_w.reserve(3 * D * D);
      L.qkv_b.reserve(3 * D);
      for (const char* name : {"query", "key", "value"}) {
        auto wq = get(l + "attention.attention." + name + ".weight", {D, D});
        auto bq = c.qkv_bias ? get(l + "attention.attention." + name + ".bias", {D}) : zeros(D);
        L.qkv_w.insert(L.qkv_w.end(), wq.begin(), wq.end());
        L.qkv_b.insert(L.qkv_b.end(), bq.begin(), bq.end());
      }
      L.out_w = get(l + "attention.output.dense.weight", {D, D});
      L.out_b = get(l + "attention.output.dense.bias", {D});
      L.ls1 = get(l + "layer_scale1.lambda1", {D});
      L.ln2_w = get(l + "norm2.weight", {D});
      L.ln2_b = get(l + "norm2.bias", {D});
      if (c.swiglu) {
        L.fc1_w = get(l + "mlp.weights_in.weight", {2 * M, D});
        L.fc1_b = get(l + "mlp.weights_in.bias", {2 * M});
        L.fc2_w = get(l + "mlp.weights_out.weight", {D, M});
        L.fc2_b = get(l + "mlp.weights_out.bias", {D});
      } else {
        L.fc1_w = get(l + "mlp.fc1.weight", {M, D});
        L.fc1_b = get(l + "mlp.fc1.bias", {M});
        L.fc2_w = get(l + "mlp.fc2.weight", {D, M});
        L.fc2_b = get(l + "mlp.fc2.bias", {D});
      }
      L.ls2 = get(l + "layer_scale2.lambda1", {D});
      w.layers.push_back(std::move(L));
    }
    w.final_ln_w = get("layernorm.weight", {D});
    w.final_ln_b = get("layernorm.bias", {D});
  } else {
    w.patch_w = get("embeddings.patch_embedding.weight", {D, C, p, p});
    w.patch_b = zeros(D);
    w.cls = get("embeddings.class_embedding", {D});
    w.pos = get("embeddings.position_embedding.weight", {N + 1, D});
    w.pre_ln_w = get("pre_layrnorm.weight", {D});
    w.pre_ln_b = get("pre_layrnorm.bias", {D});
    for (int i = 0; i < c.layers; ++i) {
      const std::string l = "encoder.layers." + std::to_string(i) + ".";
      VitLayerWeights L;
      L.ln1_w = get(l + "layer_norm1.weight", {D});
      L.ln1_b = get(l + "layer_norm1.bias", {D});
      for (const char* name : {"q_proj", "k_proj", "v_proj"}) {
        auto wq = get(l + "self_attn." + name + ".weight", {D, D});
        auto bq = get(l + "self_attn." + name + ".bias", {D});
        L.qkv_w.insert(L.qkv_w.end(), wq.begin(), wq.end());
        L.qkv_b.insert(L.qkv_b.end(), bq.begin(), bq.end());
      }
      L.out_w = get(l + "self_attn.out_proj.weight", {D, D});
      L.out_b = get(l + "self_attn.out_proj.bias", {D});
      L.ln2_w = get(l + "layer_norm2.weight", {D});
      L.ln2_b = get(l + "layer_norm2.bias", {D});
      L.fc1_w = get(l + "mlp.fc1.weight", {M, D});
      L.fc1_b = get(l + "mlp.fc1.bias", {M});
      L.fc2_w = get(l + "mlp.fc2.weight", {D, M});
      L.fc2_b = get(l + "mlp.fc2.bias", {D});
      w.layers.push_back(std::move(L));
    }
    w.final_ln_w = get("post_layernorm.weight", {D});
    w.final_ln_b = get("post_layernorm.bias", {D});
    if (c.proj_dim > 0) {
      // visual_projection sits beside vision_model, never under it.
      w.proj = st.to_float("visual_projection.weight", {c.proj_dim, D});
    }
  }
  return m;
}

VitModel random_vit_model(const VitConfig& c, uint64_t seed) {
  c.validate();
  VitModel m;
  m.config = c;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto rnd = [&](int64_t k) {
    std::vector<float> v(static_cast<size_t>(k));
    for (auto& x : v) x = nd(rng);
    return v;
  };
  auto ones = [](int64_t k) { return std::vector<float>(static_cast<size_t>(k), 1.0f); };
  const int64_t D = c.hidden, M = c.mlp, K = int64_t(c.channels) * c.patch * c.patch, N = int64_t(c.grid()) * c.grid();
  const int64_t M1 = c.swiglu ? 2 * M : M;
  VitWeights& w = m.weights;
  w.patch_w = rnd(D * K);
  w.patch_b = rnd(D);
  w.cls = rnd(D);
  w.registers = rnd(int64_t(c.registers) * D);
  w.pos = rnd((N + 1) * D);
  if (c.family == VitConfig::Family::clip) {
    w.pre_ln_w = ones(D);
    w.pre_ln_b = rnd(D);
  }
  for (int i = 0; i < c.layers; ++i) {
    VitLayerWeights L;
    L.ln1_w = ones(D);
    L.ln1_b = rnd(D);
    L.qkv_w = rnd(3 * D * D);
    L.qkv_b = rnd(3 * D);
    L.out_w = rnd(D * D);
    L.out_b = rnd(D);
    L.ln2_w = ones(D);
    L.ln2_b = rnd(D);
    L.fc1_w = rnd(M1 * D);
    L.fc1_b = rnd(M1);
    L.fc2_w = rnd(D * M);
    L.fc2_b = rnd(D);
    if (c.layerscale) {
      L.ls1 = ones(D);
      L.ls2 = ones(D);
    }
    w.layers.push_back(std::move(L));
  }
  w.final_ln_w = ones(D);
  w.final_ln_b = rnd(D);
  if (c.proj_dim > 0) w.proj = rnd(int64_t(c.proj_dim) * D);
  return m;
}

VitModel quantize_vit_model(VitModel m) {
  const VitConfig& c = m.config;
  const int64_t D = c.hidden, M1 = c.swiglu ? 2 * int64_t(c.mlp) : c.mlp, M = c.mlp;
  for (VitLayerWeights& L : m.weights.layers) {
    if (L.qkv_w.empty() || L.out_w.empty() || L.fc1_w.empty() || L.fc2_w.empty())
      throw Error("quantize_vit_model: the float weights were freed (pack_vit_model with keep_float = false)");
    L.qkv_q = quantize_rows(L.qkv_w.data(), 3 * D, D);
    L.out_q = quantize_rows(L.out_w.data(), D, D);
    L.fc1_q = quantize_rows(L.fc1_w.data(), M1, D);
    L.fc2_q = quantize_rows(L.fc2_w.data(), D, M);
    L.qkv_p = L.out_p = L.fc1_p = L.fc2_p = PackedMatrix{};  // float copies, if packed: the int8 ones run
  }
  m.precision = VitPrecision::int8;
  return m;
}

VitModel pack_vit_model(VitModel m, bool keep_float, int64_t cols) {
  if (!packed_gemm_preferred()) return m;
  const VitConfig& c = m.config;
  const int64_t D = c.hidden, M1 = c.swiglu ? 2 * int64_t(c.mlp) : c.mlp, M = c.mlp;
  VitWeights& W = m.weights;
  if (W.layers.size() != size_t(c.layers)) throw Error("ViT model has no weights loaded");
  const auto free_float = [&](std::initializer_list<std::vector<float>*> vs) {
    if (!keep_float)
      for (auto* v : vs) std::vector<float>().swap(*v);
  };
  // Packs w [n, k] into p unless it is packed already; a float matrix of
  // another size (a model built by hand) is refused, never read past its end.
  const auto pack = [cols](PackedMatrix& p, const std::vector<float>& w, int64_t n, int64_t k, const char* what) {
    if (!p.empty()) return;
    if (int64_t(w.size()) != n * k)
      throw Error(std::string("ViT weights: ") + what + " has " + std::to_string(w.size()) + " values, the config needs " +
                  std::to_string(n) + " x " + std::to_string(k));
    p = pack_rows(w.data(), n, k, cols);
  };
  // Everything that multiplies by a weight matrix, so that no sgemm is left
  // whose result could depend on the batch or the thread split.
  pack(W.patch_p, W.patch_w, D, int64_t(c.channels) * c.patch * c.patch, "patch embedding");
  if (c.proj_dim > 0) pack(W.proj_p, W.proj, c.proj_dim, D, "visual_projection");
  free_float({&W.patch_w, &W.proj});
  for (VitLayerWeights& L : W.layers) {
    if (m.precision == VitPrecision::f32) {  // int8 linear layers run on qmatmul
      pack(L.qkv_p, L.qkv_w, 3 * D, D, "qkv");
      pack(L.out_p, L.out_w, D, D, "attention output");
      pack(L.fc1_p, L.fc1_w, M1, D, "fc1");
      pack(L.fc2_p, L.fc2_w, D, M, "fc2");
    }
    free_float({&L.qkv_w, &L.out_w, &L.fc1_w, &L.fc2_w});
  }
  return m;
}

// ---------------------------------------------------------------------------
// Bicubic resize of the position-embedding grid (PyTorch's CPU kernels)
// ---------------------------------------------------------------------------

namespace {

// aten/src/ATen/native/UpSample.h: cubic convolution with A = -0.75.
inline float cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
inline float cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

struct Taps {
  std::vector<int> index;     // [out, ntaps]
  std::vector<float> weight;  // [out, ntaps]
  int ntaps = 0;
};

// Plain bicubic, align_corners=False: the source coordinate is
// scale * (i + 0.5) - 0.5 with scale = in / out (size= given, no scale_factor),
// four taps with indices clamped to the border.
Taps cubic_taps(int in, int out) {
  Taps t;
  t.ntaps = 4;
  t.index.resize(size_t(out) * 4);
  t.weight.resize(size_t(out) * 4);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int i = 0; i < out; ++i) {
    const float real = scale * (static_cast<float>(i) + 0.5f) - 0.5f;
    const int64_t idx = std::min<int64_t>(static_cast<int64_t>(std::floor(real)), in - 1);
    const float lam = std::min(std::max(real - static_cast<float>(idx), 0.0f), 1.0f);
    const float A = -0.75f;
    const float c[4] = {cubic2(lam + 1.0f, A), cubic1(lam, A), cubic1(1.0f - lam, A), cubic2(1.0f - lam + 1.0f, A)};
    for (int j = 0; j < 4; ++j) {
      t.index[size_t(i) * 4 + j] = static_cast<int>(std::clamp<int64_t>(idx - 1 + j, 0, in - 1));
      t.weight[size_t(i) * 4 + j] = c[j];
    }
  }
  return t;
}

// PIL's bicubic (a = -0.5), which torch uses when antialias=True.
inline float aa_cubic(float x) {
  const double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1.0) return static_cast<float>(((a + 2.0) * x - (a + 3.0)) * x * x + 1);
  if (x < 2.0) return static_cast<float>((((x - 5) * x + 8) * x - 4) * a);
  return 0.0f;
}

// antialias=True: the filter is stretched by the scale when shrinking, taps are
// cut at the border (not clamped) and the weights renormalized.
Taps aa_taps(int in, int out) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
  const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
  Taps t;
  t.ntaps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.index.assign(size_t(out) * t.ntaps, 0);
  t.weight.assign(size_t(out) * t.ntaps, 0.0f);
  for (int i = 0; i < out; ++i) {
    const float center = static_cast<float>(scale * (i + 0.5));
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    int64_t xsize = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in) - xmin;
    xsize = std::clamp<int64_t>(xsize, 0, t.ntaps);
    float total = 0.0f;
    float* wt = &t.weight[size_t(i) * t.ntaps];
    for (int64_t j = 0; j < xsize; ++j) {
      const float wv = aa_cubic(static_cast<float>((j + xmin - center + 0.5) * invscale));
      wt[j] = wv;
      total += wv;
    }
    for (int64_t j = 0; j < t.ntaps; ++j) {
      if (j < xsize && total != 0.0f) wt[j] /= total;
      // Unused taps point at a valid row with weight 0.
      t.index[size_t(i) * t.ntaps + j] = static_cast<int>(std::min<int64_t>(xmin + j, in - 1));
      if (j >= xsize) wt[j] = 0.0f;
    }
  }
  return t;
}

}  // namespace

void resize_bicubic(const float* in, int ih, int iw, int c, float* out, int oh, int ow, bool antialias) {
  if (ih <= 0 || iw <= 0 || oh <= 0 || ow <= 0 || c <= 0) throw Error("resize_bicubic: empty grid");
  if (!antialias) {
    // One 2-D pass like torch's generic kernel: rows outer, columns inner.
    const Taps ty = cubic_taps(ih, oh), tx = cubic_taps(iw, ow);
    std::vector<float> row(c);
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox) {
        float* o = out + (size_t(oy) * ow + ox) * c;
        std::fill(o, o + c, 0.0f);
        for (int a = 0; a < 4; ++a) {
          std::fill(row.begin(), row.end(), 0.0f);
          for (int b = 0; b < 4; ++b) {
            const float wx = tx.weight[size_t(ox) * 4 + b];
            const float* src = in + (size_t(ty.index[size_t(oy) * 4 + a]) * iw + tx.index[size_t(ox) * 4 + b]) * c;
            for (int k = 0; k < c; ++k) row[k] += wx * src[k];
          }
          const float wy = ty.weight[size_t(oy) * 4 + a];
          for (int k = 0; k < c; ++k) o[k] += wy * row[k];
        }
      }
    return;
  }
  // Separable like torch's antialiased kernel: columns first, then rows.
  const Taps ty = aa_taps(ih, oh), tx = aa_taps(iw, ow);
  std::vector<float> tmp(size_t(ih) * ow * c, 0.0f);
  for (int y = 0; y < ih; ++y)
    for (int ox = 0; ox < ow; ++ox) {
      float* o = &tmp[(size_t(y) * ow + ox) * c];
      for (int j = 0; j < tx.ntaps; ++j) {
        const float wv = tx.weight[size_t(ox) * tx.ntaps + j];
        const float* src = in + (size_t(y) * iw + tx.index[size_t(ox) * tx.ntaps + j]) * c;
        for (int k = 0; k < c; ++k) o[k] += wv * src[k];
      }
    }
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox) {
      float* o = out + (size_t(oy) * ow + ox) * c;
      std::fill(o, o + c, 0.0f);
      for (int j = 0; j < ty.ntaps; ++j) {
        const float wv = ty.weight[size_t(oy) * ty.ntaps + j];
        const float* src = &tmp[(size_t(ty.index[size_t(oy) * ty.ntaps + j]) * ow + ox) * c];
        for (int k = 0; k < c; ++k) o[k] += wv * src[k];
      }
    }
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

namespace {

// Images per forward chunk for one worker. sgemm re-packs the weight matrix on
// every call; 4 images (1028 rows at 224 px) cut that packing from ~10% of the
// run time to ~3% (perf, ViT-S/14, one thread) while the activations stay small.
constexpr int kMaxChunk = 4;
// The largest arena kept between passes (ViT-B, 4 images: ~37 MB).
constexpr size_t kMaxKeptArena = size_t(64) << 20;

// Per-thread arena, allocated once per vit_forward call for `b` images of T tokens.
// R = b*T rows, D hidden, M mlp width (SwiGLU: 2M for fc1's output), G patches, K = C*p*p.
struct Scratch {
  std::vector<float> patches;  // [b*G, K] im2col of the patch conv
  std::vector<float> x;        // [R, D] residual stream
  std::vector<float> xn;       // [R, D] LayerNorm output
  std::vector<float> qkv;      // [R, 3D] q | k | v per token
  std::vector<float> ctx;      // [R, D] attention output, heads side by side
  std::vector<float> tmp;      // [R, D] projection outputs before the residual add
  std::vector<float> mid;      // [R, M1] MLP hidden (M1 = M, or 2M for SwiGLU)
  std::vector<float> att;      // [P, T, T] one head's attention probabilities per thread
  std::vector<float> pooler;   // [b, D] final LayerNorm of CLS
  // Per thread, where the model is packed: one head's keys [T, dh] (scaled by
  // 1/sqrt(dh)) and values transposed [dh, T], packed for pmatmul.
  std::vector<PackedMatrix> keys, values;

  size_t bytes() const {
    return (patches.size() + x.size() + xn.size() + qkv.size() + ctx.size() + tmp.size() + mid.size() + att.size() +
            pooler.size()) * sizeof(float);
  }

  Scratch(const VitConfig& c, int b, int T, int G, int P) : keys(size_t(P)), values(size_t(P)) {
    const size_t R = size_t(b) * T, D = c.hidden, K = size_t(c.channels) * c.patch * c.patch;
    const size_t M1 = size_t(c.swiglu ? 2 * c.mlp : c.mlp);
    patches.resize(size_t(b) * G * K);
    x.resize(R * D);
    xn.resize(R * D);
    qkv.resize(R * 3 * D);
    ctx.resize(R * D);
    tmp.resize(R * D);
    mid.resize(R * M1);
    att.resize(size_t(P) * T * T);
    pooler.resize(size_t(b) * D);
  }
};

VitAct kernel_act(VitConfig::Act act) {
  switch (act) {
    case VitConfig::Act::gelu: return VitAct::gelu;
    case VitConfig::Act::gelu_tanh: return VitAct::gelu_tanh;
    case VitConfig::Act::quick_gelu: return VitAct::quick_gelu;
    case VitConfig::Act::silu: return VitAct::silu;
    case VitConfig::Act::relu: return VitAct::relu;
  }
  return VitAct::none;
}

// x[row(i,q), c0:c1] += ls * (t[i*nq + q, c0:c1] + bias) for the nq continuing
// rows of each image; row(i,q) = i*T + q. ls may be empty (CLIP: no LayerScale).
void residual_add(const VitKernels& K, float* x, const float* t, int b, int T, int nq, int D, int64_t c0, int64_t c1,
                  const float* bias, const std::vector<float>& ls) {
  const float* scale = ls.empty() ? nullptr : ls.data();
  if (nq == T)  // every row continues: one contiguous block
    K.residual(x, D, t, D, int64_t(b) * T, c0, c1, bias, scale);
  else
    for (int i = 0; i < b; ++i)
      K.residual(x + int64_t(i) * T * D, D, t + int64_t(i) * nq * D, D, nq, c0, c1, bias, scale);
}

// C[m, n0:n1] = A[m, k] W[n0:n1]^T + bias[n0:n1] for W [n, k] (its int8 copy q
// where the model was quantized, its packed copy p where it was packed, else
// the float W through sgemm; bias may be null), then epi(c0,
// c1) on output columns [c0, c1). Columns are absolute: c and w point at
// column / row 0. The bias is written into C before sgemm accumulates onto it
// (beta = 1 skips OpenBLAS's pass that zeroes C: ~3% of a ViT-S image at batch
// 1), or added in qmatmul's epilogue or as pmatmul's starting value. With P >
// 1 the columns are split over the team (each sgemm single-threaded):
// splitting columns splits the weights, so no thread packs more of W than it
// multiplies, and each epilogue touches only its columns.
template <class Epilogue>
void linear(int64_t m, int64_t n0, int64_t n1, int64_t k, const float* a, int64_t lda, const float* w,
            const QuantizedMatrix& q, const PackedMatrix& p, const float* bias, float* c, int64_t ldc, Team& team,
            Epilogue&& epi) {
  const auto product = [&](int64_t c0, int64_t c1) {
    if (!p.empty()) {
      pmatmul(m, a, lda, p, c0, c1, bias, c, ldc);
    } else if (q.empty()) {
      if (bias)
        for (int64_t r = 0; r < m; ++r) std::copy(bias + c0, bias + c1, c + r * ldc + c0);
      matmul(m, c1 - c0, k, a, lda, w + c0 * k, k, c + c0, ldc, true, 1.0f, bias ? 1.0f : 0.0f);
    } else {
      QuantEpilogue e;
      e.bias = bias;
      qmatmul(m, a, lda, q, c0, c1, c, ldc, e);
    }
  };
  const int P = team.size();
  if (P == 1) {
    product(n0, n1);
    epi(n0, n1);
    return;
  }
  // Whole panels (packed) or 64-byte vectors per thread.
  const int64_t unit = p.empty() ? 16 : p.cols;
  const int64_t step = ((n1 - n0 + P - 1) / P + unit - 1) / unit * unit;
  team.run(P, [&](int64_t t, int) {
    const int64_t c0 = n0 + t * step, c1 = std::min(n1, c0 + step);
    if (c0 < c1) {
      product(c0, c1);
      epi(c0, c1);
    }
  });
}

// LayerNorm split by rows over the team.
void layer_norm_par(const VitKernels& K, const float* x, int64_t ldx, int64_t rows, int D, const float* g,
                    const float* b, float eps, float* y, int64_t ldy, Team& team) {
  const int P = team.size();
  if (P == 1 || rows < 2 * P) {
    K.layer_norm(x, ldx, rows, D, g, b, eps, y, ldy);
    return;
  }
  team.run(P, [&](int64_t t, int) {
    const int64_t r0 = rows * t / P, r1 = rows * (t + 1) / P;
    K.layer_norm(x + r0 * ldx, ldx, r1 - r0, D, g, b, eps, y + r0 * ldy, ldy);
  });
}

// ctx [b*nq, D] from qkv [b*T, 3D]: per image and head, att [nq, T] =
// softmax(q k^T / sqrt(dh)); ctx_h = att v. Heads spread over the team.
void attention(const VitKernels& K, const VitConfig& c, Scratch& s, int b, int T, int nq, bool packed, Team& team) {
  const int D = c.hidden, H = c.heads, dh = c.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const float* qkv = s.qkv.data();
  team.run(int64_t(b) * H, [&](int64_t ih, int worker) {
    float* att = s.att.data() + int64_t(worker) * T * T;  // [T, T] this worker's
    const int64_t i = ih / H, h = ih % H;
    const float* base = qkv + i * T * 3 * D;
    const float* q = base + h * dh;
    const float* k = base + D + h * dh;
    const float* v = base + 2 * D + h * dh;
    float* ctx = s.ctx.data() + i * nq * D + h * dh;
    if (packed) {  // the linear layers' kernel here too: sgemm is at its least efficient on k = dh = 64
      pack_strided(k, T, dh, 3 * D, 1, scale, s.keys[worker]);
      pmatmul(nq, q, 3 * D, s.keys[worker], 0, T, nullptr, att, T);
      K.softmax(att, nq, T);
      pack_strided(v, dh, T, 1, 3 * D, 1.0f, s.values[worker]);
      pmatmul(nq, att, T, s.values[worker], 0, dh, nullptr, ctx, D);
    } else {
      matmul(nq, T, dh, q, 3 * D, k, 3 * D, att, T, true, scale);
      K.softmax(att, nq, T);
      matmul(nq, dh, T, att, T, v, 3 * D, ctx, D, false);
    }
  });
}

// A block with every token's output (nq = T) on a team of P > 1, its linear
// layers on weights packed at load (pmatmul) or int8 (qmatmul): each thread
// takes a contiguous share of the rows through everything that is row by row
// (LayerNorm, the linear layers, activations, residuals), so the block has
// three fork-joins (rows, attention's heads, rows) where the split by columns
// had seven, and no thread packs or quantizes rows of A that another thread
// also does (the column split made every thread quantize all of A: int8,
// batch 1, 2 threads against 1, in one process alternating: ViT-S 1.63x to
// 1.75x with columns, 1.72x to 1.85x with rows; ViT-B 1.73x / 1.76x and 1.77x
// / 1.78x). pmatmul and qmatmul compute a row the same way in any share:
// bit-identical to one thread's.
void block_by_rows(const VitKernels& K, const VitConfig& c, const VitLayerWeights& L, Scratch& s, int b, int T,
                   bool packed, Team& team) {
  const int P = team.size();
  // out [n, cols] = a W^T + bias (bias may be null) on W's packed or int8 copy.
  const auto product = [](int64_t n, const float* a, int64_t lda, const QuantizedMatrix& q, const PackedMatrix& p,
                          int64_t cols, const float* bias, float* out, int64_t ldo) {
    if (!p.empty()) {
      pmatmul(n, a, lda, p, 0, cols, bias, out, ldo);
    } else {
      QuantEpilogue e;
      e.bias = bias;
      qmatmul(n, a, lda, q, 0, cols, out, ldo, e);
    }
  };
  const int64_t D = c.hidden, M = c.mlp, M1 = c.swiglu ? 2 * M : M, R = int64_t(b) * T;
  // Shares in whole 4-row units, as even as they go: 257 rows on 2 threads are
  // 128 + 129, not 132 + 125 (pmatmul then cuts each share into its tiles).
  const int64_t tiles = (R + 3) / 4;
  const auto rows = [&](int64_t t, int64_t& r0, int64_t& n) {
    r0 = std::min(R, tiles * t / P * 4);
    n = std::min(R, tiles * (t + 1) / P * 4) - r0;
    return n > 0;
  };
  float* x = s.x.data();
  float* xn = s.xn.data();
  float* tmp = s.tmp.data();
  float* mid = s.mid.data();
  const float* ls1 = L.ls1.empty() ? nullptr : L.ls1.data();
  const float* ls2 = L.ls2.empty() ? nullptr : L.ls2.data();
  const VitAct act = kernel_act(c.act);
  // xn = LN1(x); qkv = xn W_qkv^T + b, rows [r0, r0 + n) per thread
  team.run(P, [&](int64_t t, int) {
    int64_t r0, n;
    if (!rows(t, r0, n)) return;
    K.layer_norm(x + r0 * D, D, n, int(D), L.ln1_w.data(), L.ln1_b.data(), c.ln_eps, xn + r0 * D, D);
    product(n, xn + r0 * D, D, L.qkv_q, L.qkv_p, 3 * D, L.qkv_b.data(), s.qkv.data() + r0 * 3 * D, 3 * D);
  });
  attention(K, c, s, b, T, T, packed, team);
  // x += ls1 * (ctx W_o^T + b_o); xn = LN2(x); mid = act(xn W1^T + b1); x += ls2 * (mid W2^T + b2)
  team.run(P, [&](int64_t t, int) {
    int64_t r0, n;
    if (!rows(t, r0, n)) return;
    product(n, s.ctx.data() + r0 * D, D, L.out_q, L.out_p, D, nullptr, tmp + r0 * D, D);
    K.residual(x + r0 * D, D, tmp + r0 * D, D, n, 0, D, L.out_b.data(), ls1);
    K.layer_norm(x + r0 * D, D, n, int(D), L.ln2_w.data(), L.ln2_b.data(), c.ln_eps, xn + r0 * D, D);
    product(n, xn + r0 * D, D, L.fc1_q, L.fc1_p, M1, L.fc1_b.data(), mid + r0 * M1, M1);
    if (c.swiglu)
      K.swiglu(mid, r0, r0 + n, int(M), nullptr);
    else
      K.bias_act(mid + r0 * M1, M1, n, 0, M1, nullptr, act);
    product(n, mid + r0 * M1, M1, L.fc2_q, L.fc2_p, D, nullptr, tmp + r0 * D, D);
    K.residual(x + r0 * D, D, tmp + r0 * D, D, n, 0, D, L.fc2_b.data(), ls2);
  });
}

// One pre-norm transformer block over b images of T tokens. nq = T computes every
// token's output; nq = 1 only the CLS token's (enough for the last block when
// only the pooled output is wanted: K and V still come from all tokens).
// packed: attention on pmatmul (the model was packed, pack_vit_model).
// team: the threads inside the block (rows where the linear layers are packed
// or int8, else columns of each linear layer; heads of the attention; team.h
// explains why not OpenMP); a team of 1 when whole images are spread over
// threads instead.
void block(const VitKernels& K, const VitConfig& c, const VitLayerWeights& L, Scratch& s, int b, int T, int nq,
           bool packed, Team& team) {
  const int P = team.size();
  if ((!L.qkv_p.empty() || !L.qkv_q.empty()) && P > 1 && nq == T) {  // linear layers packed or int8
    block_by_rows(K, c, L, s, b, T, packed, team);
    return;
  }
  const int D = c.hidden, M = c.mlp;
  const int64_t R = int64_t(b) * T, Rq = int64_t(b) * nq;
  const int64_t ldx = nq == T ? D : int64_t(T) * D;  // stride between continuing rows of x
  float* x = s.x.data();
  float* qkv = s.qkv.data();
  float* tmp = s.tmp.data();
  float* mid = s.mid.data();
  const VitAct act = kernel_act(c.act);

  // xn [R, D] = LN1(x); qkv [R, 3D] = xn W_qkv^T + b. With nq = 1 only the CLS
  // rows' queries are needed: q for those rows, k and v for all.
  const auto none = [](int64_t, int64_t) {};
  layer_norm_par(K, x, D, R, D, L.ln1_w.data(), L.ln1_b.data(), c.ln_eps, s.xn.data(), D, team);
  if (nq == T) {
    linear(R, 0, 3 * D, D, s.xn.data(), D, L.qkv_w.data(), L.qkv_q, L.qkv_p, L.qkv_b.data(), qkv, 3 * D, team, none);
  } else {
    linear(R, D, 3 * D, D, s.xn.data(), D, L.qkv_w.data(), L.qkv_q, L.qkv_p, L.qkv_b.data(), qkv, 3 * D, team, none);
    linear(b, 0, D, D, s.xn.data(), int64_t(T) * D, L.qkv_w.data(), L.qkv_q, L.qkv_p, L.qkv_b.data(), qkv,
           int64_t(T) * 3 * D, team, none);
  }
  attention(K, c, s, b, T, nq, packed, team);
  // tmp [Rq, D] = ctx W_o^T; x += ls1 * (tmp + b_o)
  linear(Rq, 0, D, D, s.ctx.data(), D, L.out_w.data(), L.out_q, L.out_p, nullptr, tmp, D, team, [&](int64_t c0, int64_t c1) {
    residual_add(K, x, tmp, b, T, nq, D, c0, c1, L.out_b.data(), L.ls1);
  });

  // xn [Rq, D] = LN2(x rows); mid [Rq, M1] = act(xn W1^T + b1); tmp [Rq, D] = mid W2^T
  layer_norm_par(K, x, ldx, Rq, D, L.ln2_w.data(), L.ln2_b.data(), c.ln_eps, s.xn.data(), D, team);
  const auto add_fc2 = [&](int64_t c0, int64_t c1) {
    residual_add(K, x, tmp, b, T, nq, D, c0, c1, L.fc2_b.data(), L.ls2);
  };
  if (c.swiglu) {
    // The gate pairs column j with M + j, so the activation runs split by rows.
    linear(Rq, 0, 2 * M, D, s.xn.data(), D, L.fc1_w.data(), L.fc1_q, L.fc1_p, L.fc1_b.data(), mid, 2 * M, team, none);
    team.run(P, [&](int64_t t, int) { K.swiglu(mid, Rq * t / P, Rq * (t + 1) / P, M, nullptr); });
    linear(Rq, 0, D, M, mid, 2 * M, L.fc2_w.data(), L.fc2_q, L.fc2_p, nullptr, tmp, D, team, add_fc2);
  } else {
    linear(Rq, 0, M, D, s.xn.data(), D, L.fc1_w.data(), L.fc1_q, L.fc1_p, L.fc1_b.data(), mid, M, team,
           [&](int64_t c0, int64_t c1) { K.bias_act(mid, M, Rq, c0, c1, nullptr, act); });
    linear(Rq, 0, D, M, mid, M, L.fc2_w.data(), L.fc2_q, L.fc2_p, nullptr, tmp, D, team, add_fc2);
  }
}

// Forward of b images (pixels [b, C, h, w]); pos [1+G, D] already resized to
// the grid. Writes emb [b, dim()], pooler [b, D], last_hidden [b, T, D] where non-null.
void forward_chunk(const VitModel& m, const float* pos, const float* pixels, int b, int h, int w, Team& team,
                   Scratch& s, float* emb, float* pooler, float* last_hidden) {
  const VitConfig& c = m.config;
  const VitWeights& W = m.weights;
  const int D = c.hidden, p = c.patch, C = c.channels, gh = h / p, gw = w / p, G = gh * gw;
  const int T = c.tokens(h, w), K = C * p * p, first_patch = 1 + c.registers;
  const VitKernels& kern = vit_kernels();

  // patches [b*G, K]: row (i, gy, gx), column (ch, ky, kx) as the conv weight is laid out.
  for (int i = 0; i < b; ++i) {
    const float* img = pixels + int64_t(i) * C * h * w;
    for (int gy = 0; gy < gh; ++gy)
      for (int gx = 0; gx < gw; ++gx) {
        float* row = s.patches.data() + (int64_t(i) * G + gy * gw + gx) * K;
        for (int ch = 0; ch < C; ++ch)
          for (int ky = 0; ky < p; ++ky) {
            const float* src = img + (int64_t(ch) * h + gy * p + ky) * w + gx * p;
            std::copy(src, src + p, row + (ch * p + ky) * p);
          }
      }
  }
  // x [b*T, D]: CLS + pos[0], registers (no position), patch conv + bias + pos[1+g]
  for (int i = 0; i < b; ++i) {
    float* xi = s.x.data() + int64_t(i) * T * D;
    // The patch embedding stays float in the int8 mode (K = 588: 2% of the FLOPs).
    linear(G, 0, D, K, s.patches.data() + int64_t(i) * G * K, K, W.patch_w.data(), QuantizedMatrix{}, W.patch_p, nullptr,
           xi + int64_t(first_patch) * D, D, team, [](int64_t, int64_t) {});
    for (int k = 0; k < D; ++k) xi[k] = W.cls[k] + pos[k];
    if (c.registers > 0) std::copy(W.registers.begin(), W.registers.end(), xi + D);
    kern.residual(xi + int64_t(first_patch) * D, D, pos + D, D, G, 0, D, W.patch_b.data(), nullptr);
  }
  if (c.family == VitConfig::Family::clip)
    layer_norm_par(kern, s.x.data(), D, int64_t(b) * T, D, W.pre_ln_w.data(), W.pre_ln_b.data(), c.ln_eps,
                   s.x.data(), D, team);

  for (int l = 0; l < c.layers; ++l) {
    const bool cls_only = l == c.layers - 1 && last_hidden == nullptr;
    block(kern, c, W.layers[l], s, b, T, cls_only ? 1 : T, !W.patch_p.empty(), team);
  }

  // pooler [b, D] = final LN of the CLS rows (T*D apart)
  float* pool = s.pooler.data();
  kern.layer_norm(s.x.data(), int64_t(T) * D, b, D, W.final_ln_w.data(), W.final_ln_b.data(), c.ln_eps, pool, D);
  if (pooler) std::copy(pool, pool + int64_t(b) * D, pooler);
  if (last_hidden) {
    if (c.family == VitConfig::Family::dinov2)  // Dinov2Model's last_hidden_state is after the final LN
      layer_norm_par(kern, s.x.data(), D, int64_t(b) * T, D, W.final_ln_w.data(), W.final_ln_b.data(), c.ln_eps,
                     last_hidden, D, team);
    else  // CLIP's is the encoder output; post_layernorm only touches the pooled CLS
      std::copy(s.x.begin(), s.x.begin() + int64_t(b) * T * D, last_hidden);
  }
  if (emb) {
    if (c.proj_dim > 0 && !W.proj_p.empty())
      pmatmul(b, pool, D, W.proj_p, 0, c.proj_dim, nullptr, emb, c.proj_dim);
    else if (c.proj_dim > 0)
      matmul(b, c.proj_dim, D, pool, D, W.proj.data(), D, emb, c.proj_dim, true);
    else
      std::copy(pool, pool + int64_t(b) * D, emb);
  }
}

// The position embeddings for an h x w input: [1+G, D]. DINOv2 interpolates as
// HF's interpolate_pos_encoding (skipped when the patch count matches and h == w).
std::vector<float> position_embeddings(const VitModel& m, int h, int w) {
  const VitConfig& c = m.config;
  const int D = c.hidden, gh = h / c.patch, gw = w / c.patch, n = c.grid();
  const std::vector<float>& pos = m.weights.pos;
  if (c.family == VitConfig::Family::clip) {
    if (h != c.image_size || w != c.image_size)
      throw Error("CLIP takes " + std::to_string(c.image_size) + "x" + std::to_string(c.image_size) +
                  " inputs (its config's image_size), got " + std::to_string(h) + "x" + std::to_string(w));
    return pos;
  }
  if (gh * gw == n * n && h == w) return pos;
  std::vector<float> out(size_t(1 + gh * gw) * D);
  std::copy(pos.begin(), pos.begin() + D, out.begin());
  resize_bicubic(pos.data() + D, n, n, D, out.data() + D, gh, gw, c.antialias_pos);
  return out;
}

void run_forward(const VitModel& m, const float* pixels, int n, int h, int w, int threads, VitSplit split, float* emb,
                 float* pooler, float* last_hidden) {
  const VitConfig& c = m.config;
  if (n < 0) throw Error("vit_forward: negative batch size");
  if (n == 0) return;
  if (!pixels) throw Error("vit_forward: no pixels");
  if (h < c.patch || w < c.patch)
    throw Error("ViT input " + std::to_string(h) + "x" + std::to_string(w) + " is smaller than one " +
                std::to_string(c.patch) + "-pixel patch");
  if (m.weights.layers.size() != size_t(c.layers)) throw Error("ViT model has no weights loaded");
  const std::vector<float> pos = position_embeddings(m, h, w);
  const int T = c.tokens(h, w), G = (h / c.patch) * (w / c.patch), D = c.hidden, P = c.dim();
  const int64_t img = int64_t(c.channels) * h * w;
  if (threads <= 0) threads = default_threads();
  // int8 weights are packed once at load, so nothing is re-packed per call and
  // one image per chunk keeps the quantized activations in L2.
  const int max_chunk = m.precision == VitPrecision::int8 ? 1 : kMaxChunk;

  auto run_range = [&](Scratch& s, Team& team, int start, int b) {
    forward_chunk(m, pos.data(), pixels + start * img, b, h, w, team, s, emb ? emb + int64_t(start) * P : nullptr,
                  pooler ? pooler + int64_t(start) * D : nullptr,
                  last_hidden ? last_hidden + int64_t(start) * T * D : nullptr);
  };

  const bool by_images = split == VitSplit::images || (split == VitSplit::automatic && n >= threads);
  if (threads > 1 && by_images) {
    // Whole images per thread: no synchronization inside a forward, and each
    // sgemm runs single-threaded on its own core.
    set_blas_threads(1);
    const int chunk = std::min(max_chunk, (n + threads - 1) / threads);
    std::atomic<int> next{0};
    std::vector<std::exception_ptr> errors(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        try {
          Scratch s(c, chunk, T, G, 1);
          Team solo(1);
          for (int start; (start = next.fetch_add(chunk)) < n;) run_range(s, solo, start, std::min(chunk, n - start));
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    return;
  }
  // Fewer images than threads: the threads share each image, splitting the
  // columns of every linear layer and the heads of the attention (VitSplit::tokens),
  // or, for comparison, OpenBLAS threads inside each sgemm (VitSplit::blas; a
  // packed model has no sgemm to thread and runs it as tokens).
  const bool blas = split == VitSplit::blas && m.weights.patch_p.empty();
  const int par = blas ? 1 : threads;
  set_blas_threads(blas ? threads : 1);
  const int chunk = std::min(max_chunk, n);
  // The team, and the arena beside it, are kept for the process's next pass
  // of the same shape (TeamLease, team.h), for one pass at a time: a new
  // arena page-faulted and zeroed its ~5 MB (ViT-S, one image) every call
  // while the helpers waited. With 2 threads at batch 1 the work outside the
  // team's runs went from 3.8 to 0.9 ms per image (ViT-S) and 7.3 to 1.6
  // (ViT-B). An arena over kMaxKeptArena (large inputs) is not kept.
  struct KeptArena {
    std::vector<int> key;
    std::unique_ptr<Scratch> scratch;
  };
  TeamLease lease(par);
  KeptArena* kept = lease.kept() ? &lease.kept_state<KeptArena>() : nullptr;
  const std::vector<int> key = {c.hidden, c.mlp, c.swiglu ? 1 : 0, c.channels, c.patch, chunk, T, G, par};
  std::unique_ptr<Scratch> own;
  Scratch* s = nullptr;
  if (kept && kept->key == key && kept->scratch) {
    s = kept->scratch.get();
  } else {
    if (kept) kept->scratch.reset();  // the old arena goes before the new one is allocated
    own = std::make_unique<Scratch>(c, chunk, T, G, par);
    s = own.get();
    if (kept && s->bytes() <= kMaxKeptArena) {
      kept->scratch = std::move(own);
      kept->key = key;
    }
  }
  for (int start = 0; start < n; start += chunk) run_range(*s, lease.team(), start, std::min(chunk, n - start));
}

}  // namespace

VitOutputs vit_forward(const VitModel& m, const float* pixels, int n, int h, int w, int threads,
                       bool want_last_hidden) {
  VitOutputs o;
  if (n < 0) throw Error("vit_forward: negative batch size");
  const VitConfig& c = m.config;
  o.embedding.resize(size_t(n) * c.dim());
  o.pooler.resize(size_t(n) * c.hidden);
  if (want_last_hidden) o.last_hidden.resize(size_t(n) * c.tokens(h, w) * c.hidden);
  run_forward(m, pixels, n, h, w, threads, VitSplit::automatic, o.embedding.data(), o.pooler.data(),
              want_last_hidden ? o.last_hidden.data() : nullptr);
  return o;
}

void vit_embed(const VitModel& m, const float* pixels, int n, int h, int w, float* out, int threads,
               VitSplit split) {
  if (n > 0 && !out) throw Error("vit_embed: no output buffer");
  run_forward(m, pixels, n, h, w, threads, split, out, nullptr, nullptr);
}

// ---------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------

namespace {

class VitEncoder final : public Encoder {
 public:
  explicit VitEncoder(VitModel m) : m_(pack_vit_model(std::move(m))) {
    const VitConfig& c = m_.config;
    if (c.family == VitConfig::Family::dinov2) {
      pc_ = PreprocessConfig::dinov2();
    } else {
      // CLIP's processor resizes and crops to the model's own image_size.
      pc_ = PreprocessConfig::clip();
      pc_.resize_shorter = c.image_size;
      pc_.crop = c.image_size;
    }
  }
  std::string name() const override { return m_.config.family == VitConfig::Family::dinov2 ? "dinov2" : "clip"; }
  int dim() const override { return m_.config.dim(); }
  int input_size() const override { return pc_.crop; }
  const PreprocessConfig& preprocess() const override { return pc_; }
  std::string fingerprint() const override {
    std::call_once(fp_once_, [&] {
      std::string acc;
      if (!m_.dir.empty()) {
        for (const auto& f : m_.files) acc += sha256_file(f) + "\n";
        acc += sha256_file((fs::path(m_.dir) / "config.json").string()) + "\n";
      } else {
        // In-memory (random) weights: hash the values themselves.
        auto add = [&](const std::vector<float>& v) { acc += sha256_hex(v.data(), v.size() * sizeof(float)); };
        const VitWeights& W = m_.weights;
        for (const auto* v : {&W.patch_w, &W.patch_b, &W.cls, &W.registers, &W.pos, &W.pre_ln_w, &W.pre_ln_b,
                              &W.final_ln_w, &W.final_ln_b, &W.proj})
          add(*v);
        for (const auto& L : W.layers)
          for (const auto* v : {&L.ln1_w, &L.ln1_b, &L.qkv_w, &L.qkv_b, &L.out_w, &L.out_b, &L.ls1, &L.ln2_w,
                                &L.ln2_b, &L.fc1_w, &L.fc1_b, &L.fc2_w, &L.fc2_b, &L.ls2})
            add(*v);
      }
      acc += pc_.describe();
      // int8 embeddings differ from float ones: a memory must not mix them. A
      // suffix (as MobileNet's), so that a mismatch can say it is the precision.
      fp_ = sha256_hex(acc.data(), acc.size()) + (m_.precision == VitPrecision::int8 ? "|int8" : "");
    });
    return fp_;
  }
  void forward(const float* pixels, int n, float* out, int threads) const override {
    vit_embed(m_, pixels, n, pc_.crop, pc_.crop, out, threads);
  }
  void forward_size(const float* pixels, int n, int h, int w, float* out, int threads) const override {
    vit_embed(m_, pixels, n, h, w, out, threads);
  }
  Precision precision() const override { return m_.precision; }

 private:
  VitModel m_;
  PreprocessConfig pc_;
  mutable std::once_flag fp_once_;
  mutable std::string fp_;
};

}  // namespace

std::unique_ptr<Encoder> make_vit_encoder(VitModel model) { return std::make_unique<VitEncoder>(std::move(model)); }

std::unique_ptr<Encoder> load_vit_encoder(const std::string& dir, Precision precision) {
  VitModel m = load_vit_model(dir);
  if (precision == Precision::int8)
    return make_vit_encoder(pack_vit_model(quantize_vit_model(std::move(m)), /*keep_float=*/false));
  // The fingerprint hashes the files: the float copies of packed layers can go.
  return make_vit_encoder(pack_vit_model(std::move(m), /*keep_float=*/false));
}

std::unique_ptr<Encoder> load_vit_encoder(const std::string& dir) { return load_vit_encoder(dir, precision_from_env()); }

}  // namespace vismem
