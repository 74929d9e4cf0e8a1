// bench_image: milliseconds per image for decode and for each preprocessing preset.
//
//   bench_image [IMAGE ...]    (default: an imagenette val JPEG and the 1024x683 fixture)
//
// Reports the best of many runs (one thread), which is what the machine can do
// when nothing else competes for it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "error.h"
#include "image.h"
#include "preprocess.h"

namespace fs = std::filesystem;

namespace {

template <class F>
double best_ms(F&& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(b - a).count());
  }
  return best;
}

std::vector<std::string> default_images() {
  const fs::path shared = fs::path(__FILE__).parent_path() / ".." / ".." / "shared";
  std::vector<std::string> out;
  const fs::path val = shared / "data" / "imagenette2" / "val";
  if (fs::exists(val)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(val))
      if (vismem::is_image_path(e.path().string())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (!files.empty()) out.push_back(files.front().string());
  }
  const fs::path big = shared / "fixtures" / "preprocess" / "img4_1024x683.jpg";
  if (fs::exists(big)) out.push_back(big.string());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> images(argv + 1, argv + argc);
  if (images.empty()) images = default_images();
  if (images.empty()) {
    std::fprintf(stderr, "usage: bench_image IMAGE...\n");
    return 1;
  }
  const std::pair<const char*, vismem::PreprocessConfig> presets[] = {
      {"mobilenet", vismem::PreprocessConfig::mobilenet()},
      {"dinov2", vismem::PreprocessConfig::dinov2()},
      {"clip", vismem::PreprocessConfig::clip()},
  };
  try {
    for (const auto& path : images) {
      std::ifstream f(path, std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      const vismem::Image img = vismem::decode_image(bytes.data(), bytes.size(), path);
      const int reps = img.width * img.height > 500000 ? 30 : 200;
      const double dec = best_ms([&] { vismem::decode_image(bytes.data(), bytes.size(), path); }, reps);
      std::printf("%s (%dx%d, %zu bytes)\n  decode            %7.3f ms\n", path.c_str(), img.width, img.height, bytes.size(), dec);
      for (const auto& [name, pc] : presets) {
        std::vector<float> px(size_t(3) * pc.crop * pc.crop);
        const double rc = best_ms([&] { vismem::resize_and_crop(img, pc); }, reps);
        const double all = best_ms([&] { vismem::preprocess(img, pc, px.data()); }, reps);
        std::printf("  %-9s resize+crop %7.3f ms, +normalize %7.3f ms, decode+preprocess %7.3f ms\n", name, rc, all,
                    dec + all);
      }
    }
  } catch (const vismem::Error& e) {
    std::fprintf(stderr, "bench_image: %s\n", e.what());
    return 1;
  }
  return 0;
}
