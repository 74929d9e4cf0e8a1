// encoder.h: the one interface every image encoder (MobileNet, DINOv2, CLIP) implements.
//
// Basic usage:
//   std::unique_ptr<vismem::Encoder> enc = vismem::load_encoder("model.tflite");  // or an HF folder
//   std::vector<float> px(n * 3 * enc->input_size() * enc->input_size());        // n x 3 x S x S, CHW
//   ... fill with vismem::preprocess(img, enc->preprocess(), ...) ...
//   std::vector<float> out(n * enc->dim());
//   enc->forward(px.data(), n, out.data());   // raw model output, not normalized
//
// Precision: encoders run in float32 unless asked for int8 (load_encoder(path,
// Precision::int8), `vismem create --precision int8`, or VISMEM_PRECISION=int8):
// the big matrix products then run as int8 GEMMs (qgemm.h: 8-bit weights per
// output channel, 8-bit (or 7-bit) activations per row at run time) and fingerprint() gains
// "|int8" (then, where the int8 numerics were revised, "|" and the revision:
// MobileNet "|int8|a8"), so a memory never mixes int8 and float32 embeddings,
// nor int8 embeddings of two revisions.
//
// Thread safety: an Encoder is read-only after loading (its weights are shared);
// forward() may run concurrently from several threads, each call allocating
// its own scratch.
#pragma once
#include <memory>
#include <string>

#include "preprocess.h"

namespace vismem {

// Arithmetic of an encoder's matrix products (see the top of this file).
enum class Precision { f32, int8 };
// "f32" or "int8"; anything else throws vismem::Error naming `what`.
Precision parse_precision(const std::string& s, const std::string& what = "precision");
const char* precision_name(Precision p);
// VISMEM_PRECISION (f32 when unset); a bad value throws vismem::Error.
Precision precision_from_env();
// The precision a memory recorded at create ("f32" / "int8"), or, for a memory
// that recorded none (made before vismem recorded it), precision_from_env().
Precision recorded_precision(const std::string& recorded);

class Encoder {
 public:
  virtual ~Encoder() = default;
  virtual std::string name() const = 0;                  // "mobilenet_v1", "dinov2", "clip", ...
  virtual int dim() const = 0;                           // embedding length
  virtual int input_size() const = 0;                    // S: inputs are 3 x S x S
  virtual const PreprocessConfig& preprocess() const = 0;
  // sha256 of the weight file(s) + preprocess().describe(): two memories with
  // the same fingerprint have comparable embeddings.
  virtual std::string fingerprint() const = 0;
  // pixels: n * 3 * S * S float32, CHW per image, already normalized.
  // out: n * dim() float32, the model's raw output (not L2-normalized).
  // threads: worker threads for this call (0 = default_threads()).
  virtual void forward(const float* pixels, int n, float* out, int threads = 0) const = 0;
  // The same for h x w inputs (n * 3 * h * w). Encoders that take only their
  // own size (MobileNet) throw vismem::Error for any other; ViTs interpolate
  // their position embeddings as HF does.
  virtual void forward_size(const float* pixels, int n, int h, int w, float* out, int threads = 0) const;
  virtual Precision precision() const { return Precision::f32; }
};

// Loads by path: a .tflite file (MobileNet V1/V2), or a folder with config.json +
// model.safetensors (DINOv2 / CLIP). Throws vismem::Error on anything else.
std::unique_ptr<Encoder> load_encoder(const std::string& path, Precision precision);
// The same at precision_from_env().
std::unique_ptr<Encoder> load_encoder(const std::string& path);

}  // namespace vismem
