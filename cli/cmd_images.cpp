// embed: images (or ready pixels) to embeddings.
#include <iostream>

#include "common.h"
#include "error.h"
#include "npy.h"
#include "image.h"
#include "memory.h"
#include "pipeline.h"
#include "preprocess.h"

namespace vismem::cli {

namespace {

// Ready inputs: uint8 (N,H,W,3) / (H,W,3) RGB at the model's size, normalized
// with the model's preset; or float32 (N,3,H,W) pixels already normalized.
std::vector<float> ready_pixels(const Encoder& enc, const std::string& path, int64_t& n, int& h, int& w) {
  NpyArray a = read_npy(path);
  const int S = enc.input_size();
  const PreprocessConfig& pc = enc.preprocess();
  if (a.dtype == DType::u8) {
    std::vector<int64_t> sh = a.shape;
    if (sh.size() == 3) sh.insert(sh.begin(), 1);
    if (sh.size() != 4 || sh[1] != S || sh[2] != S || sh[3] != 3)
      throw Error(path + ": uint8 input must be (N," + std::to_string(S) + "," + std::to_string(S) + ",3) RGB, got " +
                  a.shape_str());
    n = sh[0];
    h = w = S;
    std::vector<float> out(n * 3 * S * S);
    for (int64_t i = 0; i < n; ++i) {
      Image img;
      img.width = img.height = S;
      img.rgb.assign(a.data.begin() + i * S * S * 3, a.data.begin() + (i + 1) * S * S * 3);
      normalize_to_chw(img, pc, out.data() + i * 3 * S * S);
    }
    return out;
  }
  if (a.dtype == DType::f32 || a.dtype == DType::f16) {
    if (a.shape.size() != 4 || a.shape[1] != 3)
      throw Error(path + ": float input must be (N,3,H,W) (" + std::to_string(S) + "x" + std::to_string(S) +
                  " for this model), got " + a.shape_str());
    if (a.shape[2] < 1 || a.shape[2] > 65535 || a.shape[3] < 1 || a.shape[3] > 65535)
      throw Error(path + ": float input height and width must be 1..65535, got " + a.shape_str());
    n = a.shape[0];
    h = static_cast<int>(a.shape[2]);
    w = static_cast<int>(a.shape[3]);
    return a.to_float();
  }
  throw Error(path + ": input must be uint8 (N,H,W,3) or float32 (N,3,H,W)");
}

}  // namespace

void add_image_commands(CLI::App& app) {
  auto* c = app.add_subcommand("embed", "Embed images (or ready pixel arrays) with an encoder, to .npy");
  struct A {
    std::string model, input, out, failed;
    std::vector<std::string> images;
    bool raw = false;
    int batch = 32, threads = 0;
    std::string precision;
  };
  auto a = std::make_shared<A>();
  c->add_option("--model", a->model, "Encoder: .tflite file or HF checkpoint folder")->required();
  c->add_option("--precision", a->precision, "f32 or int8 (default: VISMEM_PRECISION or f32)")
      ->check(CLI::IsMember({"f32", "int8"}));
  c->add_option("images", a->images, "Image files (JPEG, PNG, WebP, BMP)");
  c->add_option("--input", a->input, "Ready inputs .npy instead of images: uint8 (N,H,W,3) or float32 (N,3,H,W)");
  c->add_flag("--raw", a->raw, "Write the model's own output, not L2-normalized");
  c->add_option("--out", a->out, "Output .npy (N, dim) float32")->required();
  c->add_option("--batch", a->batch, "Images per encoder batch")->check(kBatchSize);
  c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
  c->callback([a] {
    auto enc = load_encoder(a->model, a->precision.empty() ? precision_from_env() : parse_precision(a->precision));
    EmbedOptions eo;
    eo.batch = a->batch;
    eo.threads = a->threads;
    eo.normalize = !a->raw;
    if (!a->input.empty()) {
      if (!a->images.empty()) throw Error("give either image files or --input, not both");
      int64_t n = 0;
      int h = 0, w = 0;
      std::vector<float> px = ready_pixels(*enc, a->input, n, h, w);
      std::vector<float> out(n * enc->dim());
      enc->forward_size(px.data(), static_cast<int>(n), h, w, out.data(), a->threads);
      if (!a->raw) l2_normalize_rows(out.data(), n, enc->dim(), "encoder output");
      write_npy_f32(a->out, out.data(), {n, enc->dim()});
      std::cout << "wrote " << a->out << " (" << n << ", " << enc->dim() << ")\n";
      return;
    }
    if (a->images.empty()) throw Error("embed needs image files or --input FILE.npy");
    EmbedResult r = embed_images(*enc, a->images, eo);
    if (!r.failed.empty()) {
      // Rows must line up with the arguments: a failed image is an error here.
      std::string msg;
      for (auto& [i, m] : r.failed) msg += (msg.empty() ? " " : "; ") + m;
      throw Error(std::to_string(r.failed.size()) + " image(s) could not be read:" + msg);
    }
    write_npy_f32(a->out, r.embeddings.data(), {static_cast<int64_t>(r.ok.size()), enc->dim()});
    std::cout << "wrote " << a->out << " (" << r.ok.size() << ", " << enc->dim() << ")\n";
  });
}

}  // namespace vismem::cli
