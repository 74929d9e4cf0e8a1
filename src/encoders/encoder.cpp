#include "encoder.h"

#include <cstdlib>
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

Precision parse_precision(const std::string& s, const std::string& what) {
  if (s == "f32") return Precision::f32;
  if (s == "int8") return Precision::int8;
  throw Error(what + " '" + s + "': expected f32 or int8");
}

const char* precision_name(Precision p) { return p == Precision::int8 ? "int8" : "f32"; }

Precision precision_from_env() {
  const char* env = std::getenv("VISMEM_PRECISION");
  return env && *env ? parse_precision(env, "VISMEM_PRECISION") : Precision::f32;
}

Precision recorded_precision(const std::string& recorded) {
  return recorded.empty() ? precision_from_env() : parse_precision(recorded, "the memory's model precision");
}

std::unique_ptr<Encoder> load_encoder(const std::string& path) { return load_encoder(path, precision_from_env()); }

std::unique_ptr<Encoder> load_encoder(const std::string& path, Precision precision) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(fs::path(path) / "config.json", ec))
      throw Error(path + ": a model folder needs config.json (an HF DINOv2 / CLIP checkpoint)");
    return load_vit_encoder(path, precision);
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model " + path);
  // Decide by content, not extension: every TFLite flatbuffer says "TFL3" at byte 4.
  char head[8] = {};
  f.read(head, sizeof(head));
  if (f.gcount() == sizeof(head) && std::memcmp(head + 4, "TFL3", 4) == 0) return MobileNet::load(path, precision);
  throw Error(path + ": not a model vismem reads (expected a .tflite MobileNet file or an HF checkpoint folder)");
}

}  // namespace vismem
