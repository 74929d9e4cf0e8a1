// Writes the fuzz targets' seed corpora (fuzz/corpus/NAME/): small valid
// inputs of every kind each reader takes, so mutations start inside the
// formats. Run once; the outputs are committed.
//   cmake --build build --target fuzz_make_seeds && build/fuzz_make_seeds fuzz/corpus
#include <png.h>
#include <webp/encode.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "image.h"
#include "npy.h"
#include "textio.h"
#include "tflite_builder.h"

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

std::string root;

void put(const std::string& dir, const std::string& name, const Bytes& b) {
  fs::create_directories(root + "/" + dir);
  vismem::write_text_file(root + "/" + dir + "/" + name, std::string(b.begin(), b.end()));
}
void put(const std::string& dir, const std::string& name, const std::string& s) { put(dir, name, Bytes(s.begin(), s.end())); }

Bytes png(int w, int h, png_uint_32 format, const Bytes& px) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(w);
  img.height = png_uint_32(h);
  img.format = format;
  png_alloc_size_t n = 0;
  png_image_write_to_memory(&img, nullptr, &n, 0, px.data(), 0, nullptr);
  Bytes out(n);
  if (!png_image_write_to_memory(&img, out.data(), &n, 0, px.data(), 0, nullptr)) std::abort();
  out.resize(n);
  return out;
}

Bytes bmp24(int w, int h, const Bytes& rgb) {
  const int stride = (w * 3 + 3) / 4 * 4;
  Bytes b(54 + size_t(stride) * h, 0);
  auto le32 = [&](size_t at, uint32_t v) { for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i)); };
  b[0] = 'B', b[1] = 'M';
  le32(2, uint32_t(b.size()));
  le32(10, 54);
  le32(14, 40);
  le32(18, uint32_t(w));
  le32(22, uint32_t(h));
  b[26] = 1, b[28] = 24;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) b[54 + size_t(h - 1 - y) * stride + x * 3 + c] = rgb[(size_t(y) * w + x) * 3 + 2 - c];
  return b;
}

Bytes npy_bytes(const std::string& descr, const std::string& shape, size_t nbytes) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  h += std::string((64 - (10 + h.size() + 1) % 64) % 64, ' ') + "\n";
  std::string s = std::string("\x93NUMPY\x01\x00", 8) + char(h.size() & 0xff) + char(h.size() >> 8) + h;
  for (size_t i = 0; i < nbytes; ++i) s += char(i * 37 + 11);
  return Bytes(s.begin(), s.end());
}

}  // namespace

int main(int argc, char** argv) {
  root = argc > 1 ? argv[1] : "fuzz/corpus";
  const int w = 12, h = 9;
  vismem::Image img;
  img.width = w, img.height = h;
  for (int i = 0; i < w * h * 3; ++i) img.rgb.push_back(uint8_t(i * 7 % 256));
  put("image", "rgb.jpg", vismem::encode_jpeg(img, 80));
  put("image", "rgb.png", png(w, h, PNG_FORMAT_RGB, img.rgb));
  put("image", "rgba.png", png(w, h / 3, PNG_FORMAT_RGBA, img.rgb));
  Bytes gray(img.rgb.begin(), img.rgb.begin() + w * h);
  put("image", "gray.png", png(w, h, PNG_FORMAT_GRAY, gray));
  put("image", "gray16.png", png(w / 2, h, PNG_FORMAT_LINEAR_Y, gray));
  put("image", "rgb.bmp", bmp24(w, h, img.rgb));
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(img.rgb.data(), w, h, w * 3, &out);
  put("image", "lossless.webp", Bytes(out, out + n));
  WebPFree(out);
  n = WebPEncodeRGB(img.rgb.data(), w, h, w * 3, 70, &out);
  put("image", "lossy.webp", Bytes(out, out + n));
  WebPFree(out);

  put("npy", "f32.npy", npy_bytes("<f4", "(3, 4)", 48));
  put("npy", "f16.npy", npy_bytes("<f2", "(2, 3)", 12));
  put("npy", "u8.npy", npy_bytes("|u1", "(1, 4, 4, 3)", 48));
  put("npy", "f64.npy", npy_bytes("<f8", "(2,)", 16));
  put("npy", "i64.npy", npy_bytes("<i8", "()", 8));

  put("neighbors", "paper.json",
      std::string(R"({"q1": {"featurizer": "dinov2", "image_id": "q1", "image_class": 3,)") +
          R"( "neighbor_image_ids": ["a", "b", "c"], "neighbor_classes": [3, 4, 3], "neighbor_distances": [0.1, 0.2, 0.25]},)" +
          R"( "q2": {"image_class": ["x", "y"], "neighbor_image_ids": [1, 2], "neighbor_classes": ["x", "z"],)" +
          R"( "neighbor_distances": [0, 1e-3]}})");

  put("tflite", "small.tflite", vismem::test::build_model(vismem::test::small_net()));

  std::string hdr = R"({"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},)"
                    R"( "b": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]}, "c": {"dtype": "BF16", "shape": [1], "data_offsets": [22, 24]}})";
  std::string st;
  for (int i = 0; i < 8; ++i) st += char((hdr.size() >> (8 * i)) & 0xff);
  st += hdr + std::string(24, '\x3c');
  put("safetensors", "small.safetensors", st);
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
