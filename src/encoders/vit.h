// vit.h: the paper's encoders, DINOv2 and CLIP vision transformers, run natively
// from HF checkpoints (config.json + model.safetensors), float32 (or, opt-in,
// with int8 linear layers: quantize_vit_model, VISMEM_PRECISION=int8).
//
// Basic usage:
//   std::unique_ptr<vismem::Encoder> enc = vismem::load_vit_encoder("/models/dinov2-small");
//   enc->forward(pixels, n, out.data());   // n x 3 x 224 x 224 -> n x enc->dim()
//
//   // Lower level, any input size (position embeddings interpolated as HF does):
//   vismem::VitModel m = vismem::load_vit_model("/models/dinov2-small");
//   vismem::VitOutputs o = vismem::vit_forward(m, pixels, n, 70, 70, 0, /*want_last_hidden=*/true);
//
// Supported config.json kinds: dinov2 / Dinov2Model, dinov2_with_registers,
// clip / CLIPModel (vision tower + visual_projection; the text tower is ignored),
// clip_vision_model / CLIPVisionModelWithProjection. Every weight is read by its
// checkpoint key and shape-checked against the config; F32/F16/BF16 are
// converted to float32 once at load.
// Thread safety: a VitModel is read-only after loading; vit_forward() may run
// from several threads at once: where one thread takes the images (threads
// 1) or all threads share them (fewer images than threads), one pass at a
// time uses the process's kept team and the arena kept beside it (team.h,
// TeamLease; at most 64 MB, ViT-B on 4 images ~37 MB, held until a pass of
// another shape), the others a team and an arena of their own. It sets
// OpenBLAS's global thread count (set_blas_threads: 1, or `threads` for
// VitSplit::blas), so concurrent calls should use the same split.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "encoder.h"
#include "packed_gemm.h"
#include "qgemm.h"

namespace vismem {

struct VitConfig {
  enum class Family { dinov2, clip };
  enum class Act { gelu, gelu_tanh, quick_gelu, silu, relu };

  Family family = Family::dinov2;
  int hidden = 768;      // D
  int layers = 12;
  int heads = 12;
  int mlp = 3072;        // M: fc1 width; SwiGLU: width of each of the two branches
  int patch = 14;        // p
  int image_size = 224;  // the checkpoint's position-embedding grid is image_size / patch
  int channels = 3;
  int registers = 0;     // DINOv2 with registers: extra tokens after CLS, no position embedding
  float ln_eps = 1e-6f;
  Act act = Act::gelu;
  bool swiglu = false;         // DINOv2 ViT-g: weights_in / weights_out with SiLU gating
  bool qkv_bias = true;
  bool layerscale = true;      // DINOv2's lambda1 per residual branch; CLIP has none
  bool antialias_pos = false;  // dinov2_with_registers interpolates with antialias=True
  int proj_dim = 0;            // CLIP visual_projection width; 0 = no projection
  std::string prefix;          // checkpoint key prefix: "", "vision_model.", "dinov2."

  int grid() const { return image_size / patch; }
  int head_dim() const { return hidden / heads; }
  int dim() const { return proj_dim > 0 ? proj_dim : hidden; }  // embedding length
  int tokens(int h, int w) const { return 1 + registers + (h / patch) * (w / patch); }
  // Throws vismem::Error if the sizes are inconsistent (e.g. hidden % heads != 0).
  void validate() const;

  // config.json text -> config (HF defaults for absent keys). Throws on unknown kinds.
  static VitConfig from_json(const std::string& text, const std::string& where = "config.json");
  // DINOv2 shapes used by the benchmark (image_size 518 as the real checkpoints).
  static VitConfig dinov2_vits14();
  static VitConfig dinov2_vitb14();
};

// One transformer block. Comments name the checkpoint keys (DINOv2 / CLIP), with
// the layer prefix `encoder.layer.{i}.` / `vision_model.encoder.layers.{i}.`.
struct VitLayerWeights {
  std::vector<float> ln1_w, ln1_b;  // [D] norm1 / layer_norm1
  // [3D, D] attention.attention.{query,key,value}.weight / self_attn.{q,k,v}_proj.weight, stacked
  std::vector<float> qkv_w;
  std::vector<float> qkv_b;         // [3D] the matching biases (zeros without qkv_bias)
  std::vector<float> out_w, out_b;  // [D, D], [D] attention.output.dense / self_attn.out_proj
  std::vector<float> ls1;           // [D] layer_scale1.lambda1 (DINOv2 only)
  std::vector<float> ln2_w, ln2_b;  // [D] norm2 / layer_norm2
  std::vector<float> fc1_w, fc1_b;  // [M, D], [M] mlp.fc1 (SwiGLU: [2M, D] mlp.weights_in)
  std::vector<float> fc2_w, fc2_b;  // [D, M], [D] mlp.fc2 (SwiGLU: mlp.weights_out)
  std::vector<float> ls2;           // [D] layer_scale2.lambda1 (DINOv2 only)
  // The int8 copies of the four linear layers (quantize_vit_model); empty in float models.
  QuantizedMatrix qkv_q, out_q, fc1_q, fc2_q;
  // The same four packed for pmatmul (pack_vit_model); empty where not packed.
  PackedMatrix qkv_p, out_p, fc1_p, fc2_p;
};

// Weights in PyTorch's [out, in] layout, float32.
struct VitWeights {
  // [D, C*p*p] embeddings.patch_embeddings.projection.weight / embeddings.patch_embedding.weight
  std::vector<float> patch_w;
  std::vector<float> patch_b;    // [D] embeddings.patch_embeddings.projection.bias (CLIP: none, zeros)
  std::vector<float> cls;        // [D] embeddings.cls_token / embeddings.class_embedding
  std::vector<float> registers;  // [R, D] embeddings.register_tokens
  std::vector<float> pos;        // [1+N, D] embeddings.position_embeddings / embeddings.position_embedding.weight
  std::vector<float> pre_ln_w, pre_ln_b;  // [D] pre_layrnorm (CLIP only)
  std::vector<VitLayerWeights> layers;
  std::vector<float> final_ln_w, final_ln_b;  // [D] layernorm (DINOv2) / post_layernorm (CLIP)
  std::vector<float> proj;                    // [P, D] visual_projection.weight (CLIP)
  PackedMatrix patch_p, proj_p;               // packed copies (pack_vit_model); empty where not packed
};

// f32: float32 throughout. int8: the four linear layers of every block run as
// int8 GEMMs (qgemm.h: weights per output channel, activations per row at run
// time); attention, norms, the patch embedding and the activations stay float.
using VitPrecision = Precision;

struct VitModel {
  VitConfig config;
  VitWeights weights;
  VitPrecision precision = VitPrecision::f32;
  std::string dir;                  // where it was loaded from ("" for random models)
  std::vector<std::string> files;   // weight files, for the fingerprint
};

// dir: a folder with config.json and model.safetensors (or a sharded index).
VitModel load_vit_model(const std::string& dir);
// Random weights of the config's shapes (benchmarks, tests); deterministic in seed.
VitModel random_vit_model(const VitConfig& config, uint64_t seed = 1);
// The opt-in int8 mode: adds the int8 copies of the linear layers (the float
// weights stay, for the fingerprint and the float path's tests).
VitModel quantize_vit_model(VitModel model);
// Every weight matrix (patch embedding, the four linear layers per block,
// CLIP's projection) packed once for pmatmul (packed_gemm.h), where
// packed_gemm_preferred() (avx2; avx512 where OpenBLAS runs no AVX-512 kernels); attention then runs on
// pmatmul too. Elsewhere the model is returned as it is and sgemm runs. A
// packed model's embedding of an image is bit-identical whatever the batch
// and the thread count. keep_float = false frees the float copies of those
// matrices (half the weights' memory; quantize_vit_model and the fingerprint
// of an in-memory model need them), also in a model packed before. In an
// int8 model the linear layers stay int8 (qmatmul); the patch embedding,
// projection and attention are packed. Throws vismem::Error if the model has
// no weights or a weight matrix does not have the config's size. cols: the
// panel width (packed_gemm.h; 0: this CPU's), for tests of the other layout.
VitModel pack_vit_model(VitModel model, bool keep_float = true, int64_t cols = 0);

struct VitOutputs {
  std::vector<float> embedding;    // n x dim(): DINOv2 pooler_output, CLIP image_embeds (not normalized)
  std::vector<float> pooler;       // n x D: final LayerNorm of CLS (DINOv2 pooler_output, CLIP post_layernorm)
  std::vector<float> last_hidden;  // n x tokens x D when asked: HF last_hidden_state (CLIP: before post_layernorm)
};

// pixels: n x C x h x w float32, CHW per image. DINOv2 accepts any h, w >= patch
// (position embeddings bicubic-interpolated exactly as HF transformers does);
// CLIP requires h == w == image_size, as HF does by default.
// threads: 0 = default_threads(). With n >= threads, images are split across
// threads; otherwise the threads share each image (VitSplit::tokens).
VitOutputs vit_forward(const VitModel& m, const float* pixels, int n, int h, int w, int threads = 0,
                       bool want_last_hidden = false);

// How vit_embed spreads `threads` over a batch. images: whole images per thread.
// tokens: all threads on each image (columns of each linear layer, attention
// heads). blas: OpenBLAS's own threads inside each sgemm (kept for
// comparison; a packed model, which calls no sgemm, runs it as tokens).
// automatic: images when n >= threads, else tokens (bench_vit measures all three).
enum class VitSplit { automatic, images, tokens, blas };

// Only the embeddings, written to out (n x dim()): what Encoder::forward does.
void vit_embed(const VitModel& m, const float* pixels, int n, int h, int w, float* out, int threads = 0,
               VitSplit split = VitSplit::automatic);

// PyTorch's F.interpolate(mode="bicubic", align_corners=False) on a token-major
// grid: in is [ih*iw, c], out is [oh*ow, c]. antialias as the torch flag.
void resize_bicubic(const float* in, int ih, int iw, int c, float* out, int oh, int ow, bool antialias);

// The Encoder over a loaded checkpoint. name(): "dinov2" / "clip". input_size():
// DINOv2 224 (PreprocessConfig::dinov2()), CLIP the config's image_size
// (PreprocessConfig::clip() with crop and resize set to it). fingerprint():
// sha256 over the weight files, config.json and preprocess().describe(), and
// then "|int8" in the int8 mode (quantize_vit_model). The one-argument load_vit_encoder
// takes the precision from precision_from_env() (VISMEM_PRECISION).
std::unique_ptr<Encoder> load_vit_encoder(const std::string& dir, Precision precision);
std::unique_ptr<Encoder> load_vit_encoder(const std::string& dir);
std::unique_ptr<Encoder> make_vit_encoder(VitModel model);

}  // namespace vismem
