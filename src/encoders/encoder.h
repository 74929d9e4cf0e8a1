// encoder.h: the one interface every image encoder (MobileNet, DINOv2, CLIP) implements.
//
// Basic usage:
//   std::unique_ptr<vismem::Encoder> enc = vismem::load_encoder("model.tflite");  // or an HF folder
//   std::vector<float> px(n * 3 * enc->input_size() * enc->input_size());        // n x 3 x S x S, CHW
//   ... fill with vismem::preprocess(img, enc->preprocess(), ...) ...
//   std::vector<float> out(n * enc->dim());
//   enc->forward(px.data(), n, out.data());   // raw model output, not normalized
//
// Thread safety: an Encoder is read-only after loading (its weights are shared);
// forward() may run concurrently from several threads, each call allocating
// its own scratch.
#pragma once
#include <memory>
#include <string>

#include "preprocess.h"

namespace vismem {

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
};

// Loads by path: a .tflite file (MobileNet V1/V2), or a folder with config.json +
// model.safetensors (DINOv2 / CLIP). Throws vismem::Error on anything else.
std::unique_ptr<Encoder> load_encoder(const std::string& path);

}  // namespace vismem
