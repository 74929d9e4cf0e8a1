#include "encoder.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "error.h"
#include "mobilenet.h"
#include "vit.h"

namespace vismem {

void Encoder::forward_size(const float* pixels, int n, int h, int w, float* out, int threads) const {
  if (h != input_size() || w != input_size())
    throw Error(name() + " takes " + std::to_string(input_size()) + "x" + std::to_string(input_size()) + " inputs, got " +
                std::to_string(h) + "x" + std::to_string(w));
  forward(pixels, n, out, threads);
}

std::unique_ptr<Encoder> load_encoder(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(fs::path(path) / "config.json", ec))
      throw Error(path + ": a model folder needs config.json (an HF DINOv2 / CLIP checkpoint)");
    return load_vit_encoder(path);
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model " + path);
  // Decide by content, not extension: every TFLite flatbuffer says "TFL3" at byte 4.
  char head[8] = {};
  f.read(head, sizeof(head));
  if (f.gcount() == sizeof(head) && std::memcmp(head + 4, "TFL3", 4) == 0) return MobileNet::load(path);
  throw Error(path + ": not a model vismem reads (expected a .tflite MobileNet file or an HF checkpoint folder)");
}

}  // namespace vismem
