// Preprocessing against the reference pipelines (fixtures/preprocess, made with
// PIL 12.3 + torchvision 0.26 and HF image processors):
// - tv_dino_u8: torchvision Resize(256, BICUBIC) + CenterCrop(224) on the PIL image, uint8;
// - tv_dino: the same + ToTensor + Normalize (the DINOv2 evaluation transform);
// - hf_clip / hf_dino: HF CLIPImageProcessor / BitImageProcessor pixel_values.
// Plus the size and crop-offset rules and the windowed resample's consistency.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "image.h"
#include "npy.h"
#include "preprocess.h"

namespace fs = std::filesystem;
using vismem::Image;
using vismem::PreprocessConfig;

namespace {

const std::string kFixtures = std::string(VISMEM_SHARED_DIR) + "/fixtures/preprocess";

struct Fixture {
  std::string name;
  Image image;
};

// Every fixture image (NAME.{png,jpg} beside NAME.tv_dino.npy), decoded once.
const std::vector<Fixture>& fixtures() {
  static const std::vector<Fixture> all = [] {
    std::vector<Fixture> out;
    for (const auto& e : fs::directory_iterator(kFixtures)) {
      const std::string f = e.path().filename().string();
      const std::string suffix = ".tv_dino.npy";
      if (f.size() <= suffix.size() || f.compare(f.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
      const std::string name = f.substr(0, f.size() - suffix.size());
      for (const char* ext : {".png", ".jpg"})
        if (fs::exists(kFixtures + "/" + name + ext))
          out.push_back({name, vismem::decode_image_file(kFixtures + "/" + name + ext)});
    }
    std::sort(out.begin(), out.end(), [](const Fixture& a, const Fixture& b) { return a.name < b.name; });
    return out;
  }();
  return all;
}

PreprocessConfig hf_dino() {  // BitImageProcessor as HF ships it for DINOv2
  PreprocessConfig pc = PreprocessConfig::dinov2();
  pc.rounding = PreprocessConfig::Rounding::hf;
  return pc;
}

struct Diff {
  double max_abs = 0;
  size_t values_differ = 0;  // any difference
  size_t levels_differ = 0;  // values that sit on a different uint8 level
  int max_levels = 0;
};

// ours vs ref (both 3 x crop x crop normalized); a level is 1/255 on the [0,1] scale.
Diff compare_normalized(const std::vector<float>& ours, const std::vector<float>& ref, const PreprocessConfig& pc) {
  Diff d;
  const size_t plane = ours.size() / 3;
  for (size_t i = 0; i < ours.size(); ++i) {
    const int c = int(i / plane);
    const double a = std::fabs(double(ours[i]) - ref[i]);
    d.max_abs = std::max(d.max_abs, a);
    d.values_differ += a != 0;
    const int levels = int(std::lround(a * pc.std[c] / pc.scale));
    d.levels_differ += levels != 0;
    d.max_levels = std::max(d.max_levels, levels);
  }
  return d;
}

std::vector<float> run(const Image& img, const PreprocessConfig& pc) {
  std::vector<float> px(size_t(3) * pc.crop * pc.crop);
  vismem::preprocess(img, pc, px.data());
  return px;
}

Image random_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  // Smooth gradients plus noise: both the overshoot of the bicubic lobes and the clipping get exercised.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.rgb[(size_t(y) * w + x) * 3 + c] = uint8_t(((x * (c + 1) * 7 + y * 3) & 255) ^ (rng() & 31));
  return img;
}

}  // namespace

TEST(Preprocess, TorchvisionDinoUint8Exact) {
  ASSERT_GE(fixtures().size(), 8u);
  for (const auto& f : fixtures()) {
    const Image ours = vismem::resize_and_crop(f.image, PreprocessConfig::dinov2());
    const vismem::NpyArray ref = vismem::read_npy(kFixtures + "/" + f.name + ".tv_dino_u8.npy");
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{224, 224, 3})) << f.name;
    ASSERT_EQ(ours.width, 224);
    ASSERT_EQ(ours.height, 224);
    size_t differ = 0;
    int max_diff = 0;
    for (size_t i = 0; i < ours.rgb.size(); ++i) {
      const int d = std::abs(int(ours.rgb[i]) - int(ref.data[i]));
      differ += d != 0;
      max_diff = std::max(max_diff, d);
    }
    std::printf("  tv_dino_u8 %-16s %zu of %zu values differ, max diff %d\n", f.name.c_str(), differ, ours.rgb.size(),
                max_diff);
    EXPECT_LE(max_diff, 1) << f.name;
    EXPECT_EQ(differ, 0u) << f.name << ": Pillow's fixed-point resample should be reproduced exactly";
  }
}

TEST(Preprocess, TorchvisionDinoFloat) {
  const PreprocessConfig pc = PreprocessConfig::dinov2();
  // One uint8 level after Normalize, for the channel with the smallest std.
  const double level = 1.0 / 255.0 / *std::min_element(pc.std, pc.std + 3);
  for (const auto& f : fixtures()) {
    const vismem::NpyArray ref = vismem::read_npy(kFixtures + "/" + f.name + ".tv_dino.npy");
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{3, 224, 224})) << f.name;
    const Diff d = compare_normalized(run(f.image, pc), ref.to_float(), pc);
    std::printf("  tv_dino    %-16s max |diff| %.3g, %zu values differ (%zu by a uint8 level)\n", f.name.c_str(), d.max_abs,
                d.values_differ, d.levels_differ);
    EXPECT_LE(d.max_abs, level + 1e-6) << f.name;
    EXPECT_EQ(d.levels_differ, 0u) << f.name;
    // x / 255 then (x - mean) / std in float32, as ToTensor + Normalize: bit-exact.
    EXPECT_EQ(d.values_differ, 0u) << f.name;
  }
}

TEST(Preprocess, HfProcessorsSameCropWithinTwoLevels) {
  // The HF fixtures come from HF's torchvision-backed processors, whose uint8
  // bicubic differs from PIL's by a level on ~0.3% of values (2 levels seen once);
  // the crop offsets must match exactly (a shifted crop moves every edge).
  struct Case {
    const char* label;
    const char* suffix;
    PreprocessConfig pc;
  };
  const Case cases[] = {{"hf_clip", ".hf_clip.npy", PreprocessConfig::clip()}, {"hf_dino", ".hf_dino.npy", hf_dino()}};
  for (const auto& c : cases) {
    for (const auto& f : fixtures()) {
      const vismem::NpyArray ref = vismem::read_npy(kFixtures + "/" + f.name + c.suffix);
      ASSERT_EQ(ref.shape, (std::vector<int64_t>{3, 224, 224})) << f.name << c.suffix;
      const auto ref_f = ref.to_float();
      const Diff d = compare_normalized(run(f.image, c.pc), ref_f, c.pc);
      // The other crop convention, for contrast.
      PreprocessConfig other = c.pc;
      other.rounding = PreprocessConfig::Rounding::torchvision;
      const Diff o = compare_normalized(run(f.image, other), ref_f, other);
      std::printf("  %-10s %-16s max |diff| %.3g (%d levels), %zu of %zu values off by a level; torchvision crop: max %.3g\n",
                  c.label, f.name.c_str(), d.max_abs, d.max_levels, d.levels_differ, ref_f.size(), o.max_abs);
      EXPECT_LE(d.max_levels, 2) << f.name << c.suffix;
      EXPECT_LE(double(d.levels_differ), 0.01 * double(ref_f.size())) << f.name << c.suffix;
      EXPECT_LE(d.max_abs, o.max_abs + 1e-6) << f.name << c.suffix;
    }
  }
}

TEST(Preprocess, ResizedSizeAndCropOffsets) {
  // int(256 * long / short), e.g. int(256 * 1024 / 683) = int(383.8) = 383.
  const PreprocessConfig d = PreprocessConfig::dinov2();
  EXPECT_EQ(vismem::resized_size(1024, 683, d), std::make_pair(383, 256));
  EXPECT_EQ(vismem::resized_size(220, 150, d), std::make_pair(375, 256));
  EXPECT_EQ(vismem::resized_size(240, 321, d), std::make_pair(256, 342));
  EXPECT_EQ(vismem::resized_size(257, 257, d), std::make_pair(256, 256));
  EXPECT_EQ(vismem::resized_size(64, 64, d), std::make_pair(256, 256));
  EXPECT_EQ(vismem::resized_size(240, 321, PreprocessConfig::clip()), std::make_pair(224, 299));

  // Offsets, seen through the crop: a ramp image whose red channel is x and green is y,
  // with no resampling (resize_shorter equals the short side).
  auto offsets = [](int w, int h, int crop, PreprocessConfig::Rounding r) {
    Image img;
    img.width = w;
    img.height = h;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) img.rgb.insert(img.rgb.end(), {uint8_t(x), uint8_t(y), 1});
    PreprocessConfig pc;
    pc.resize_shorter = std::min(w, h);
    pc.crop = crop;
    pc.rounding = r;
    const Image out = vismem::resize_and_crop(img, pc);
    // Top-left pixel inside the image: its coordinates minus its position give the offset.
    for (int y = 0; y < crop; ++y)
      for (int x = 0; x < crop; ++x) {
        const uint8_t* p = &out.rgb[(size_t(y) * crop + x) * 3];
        if (p[2] == 1) return std::make_pair(int(p[0]) - x, int(p[1]) - y);
      }
    return std::make_pair(-999, -999);
  };
  using R = PreprocessConfig::Rounding;
  // torchvision: int(round((size - crop) / 2.0)), round half to even: 79.5 -> 80, 16.5 -> 16, 37.5 -> 38.
  EXPECT_EQ(offsets(224 + 159, 224, 224, R::torchvision), std::make_pair(80, 0));
  EXPECT_EQ(offsets(224 + 33, 224 + 75, 224, R::torchvision), std::make_pair(16, 38));
  // HF center_crop: (size - crop) // 2.
  EXPECT_EQ(offsets(224 + 159, 224, 224, R::hf), std::make_pair(79, 0));
  EXPECT_EQ(offsets(224 + 33, 224 + 75, 224, R::hf), std::make_pair(16, 37));
  // Crop larger than the image: zero padding. torchvision pads (crop - size) // 2 before
  // (offset -1 for a 3-pixel shortfall); HF keeps (size - crop) // 2 = -2.
  EXPECT_EQ(offsets(50, 47, 50, R::torchvision), std::make_pair(0, -1));
  EXPECT_EQ(offsets(50, 47, 50, R::hf), std::make_pair(0, -2));
}

TEST(Preprocess, WindowedResampleEqualsFullResizeThenCrop) {
  // resize_and_crop resamples only the crop window; it must equal resizing
  // everything (Pillow's whole-image two-pass resample) and cropping after.
  struct Case {
    int w, h, shorter, crop;
    PreprocessConfig::Rounding r;
  };
  const Case cases[] = {
      {500, 375, 256, 224, PreprocessConfig::Rounding::torchvision},  // downscale both ways
      {64, 64, 256, 224, PreprocessConfig::Rounding::torchvision},    // upscale (tiny-imagenet)
      {300, 224, 224, 224, PreprocessConfig::Rounding::hf},           // no resampling: a plain crop
      {97, 301, 120, 100, PreprocessConfig::Rounding::hf},            // tall, odd sizes
      {80, 60, 50, 90, PreprocessConfig::Rounding::torchvision},      // crop larger than the resized image
      {80, 60, 50, 90, PreprocessConfig::Rounding::hf},
      {600, 5, 20, 16, PreprocessConfig::Rounding::torchvision},     // extreme aspect ratio
  };
  for (const auto& c : cases) {
    const Image img = random_image(c.w, c.h, uint32_t(c.w * 1000 + c.h));
    PreprocessConfig pc;
    pc.resize_shorter = c.shorter;
    pc.crop = c.crop;
    pc.rounding = c.r;
    const auto [nw, nh] = vismem::resized_size(c.w, c.h, pc);
    const Image full = vismem::resize_bicubic(img, nw, nh);
    ASSERT_EQ(full.width, nw);
    ASSERT_EQ(full.height, nh);
    const Image win = vismem::resize_and_crop(img, pc);
    ASSERT_EQ(win.width, c.crop);
    ASSERT_EQ(win.height, c.crop);
    // Locate the window by the same offsets the crop test above pins down.
    auto off = [&](int size) {
      const int d = size - c.crop;
      if (c.r == PreprocessConfig::Rounding::hf) return int(std::floor(d / 2.0));
      if (d < 0) return -((-d) / 2);
      return int(std::nearbyint(d / 2.0));  // default rounding mode: half to even
    };
    const int x0 = off(nw), y0 = off(nh);
    size_t differ = 0;
    for (int y = 0; y < c.crop; ++y)
      for (int x = 0; x < c.crop; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          const int sx = x0 + x, sy = y0 + y;
          const uint8_t want = (sx >= 0 && sx < nw && sy >= 0 && sy < nh) ? full.rgb[(size_t(sy) * nw + sx) * 3 + ch] : 0;
          differ += win.rgb[(size_t(y) * c.crop + x) * 3 + ch] != want;
        }
    EXPECT_EQ(differ, 0u) << c.w << "x" << c.h << " -> " << c.shorter << " / " << c.crop;
  }
}

TEST(Preprocess, SameSizeResizeIsACopy) {
  // PIL returns a copy when the size does not change (no resampling pass).
  const Image img = random_image(37, 23, 1);
  const Image out = vismem::resize_bicubic(img, 37, 23);
  EXPECT_EQ(out.rgb, img.rgb);
  // 224x224 with a 224/224 preset: the crop is the image itself.
  const Image sq = random_image(224, 224, 2);
  EXPECT_EQ(vismem::resize_and_crop(sq, PreprocessConfig::clip()).rgb, sq.rgb);
  // A width-only change runs the horizontal pass alone: no row mixes with another.
  const Image wide = vismem::resize_bicubic(img, 20, 23);
  for (int y = 0; y < img.height; ++y) {
    Image row;
    row.width = img.width;
    row.height = 1;
    row.rgb.assign(img.rgb.begin() + y * img.width * 3, img.rgb.begin() + (y + 1) * img.width * 3);
    const Image one = vismem::resize_bicubic(row, 20, 1);
    EXPECT_TRUE(std::equal(one.rgb.begin(), one.rgb.end(), wide.rgb.begin() + y * 20 * 3)) << "row " << y;
  }
}

TEST(Preprocess, MobilenetNormalization) {
  // (x - 128) / 128 per channel, CHW.
  const PreprocessConfig pc = PreprocessConfig::mobilenet();
  const Image img = random_image(224, 224, 3);
  const auto px = run(img, pc);
  const size_t plane = 224 * 224;
  for (size_t i = 0; i < plane; i += 97)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(px[c * plane + i], (float(img.rgb[3 * i + c]) - 128.0f) / 128.0f);
}

TEST(Preprocess, DescribeIsCanonical) {
  const PreprocessConfig presets[] = {PreprocessConfig::mobilenet(), PreprocessConfig::dinov2(), PreprocessConfig::clip()};
  for (const auto& a : presets) {
    const std::string s = a.describe();
    EXPECT_NE(s.find("resize=" + std::to_string(a.resize_shorter)), std::string::npos) << s;
    EXPECT_NE(s.find("crop=" + std::to_string(a.crop)), std::string::npos) << s;
    EXPECT_EQ(s, PreprocessConfig(a).describe());
  }
  EXPECT_NE(presets[0].describe(), presets[1].describe());
  EXPECT_NE(presets[1].describe(), presets[2].describe());
  // Every field shows: a change anywhere changes the fingerprint text.
  const PreprocessConfig base = PreprocessConfig::dinov2();
  std::vector<PreprocessConfig> changed(7, base);
  changed[0].resize_shorter = 257;
  changed[1].crop = 225;
  changed[2].rounding = PreprocessConfig::Rounding::hf;
  changed[3].scale = 1.0f / 256.0f;
  changed[4].mean[2] = 0.4061f;
  changed[5].std[0] = 0.2291f;
  changed[6].mean[0] = std::nextafter(base.mean[0], 1.0f);  // a 1-ulp change still shows
  for (const auto& c : changed) EXPECT_NE(c.describe(), base.describe()) << c.describe();
}

TEST(Preprocess, BadInputsThrow) {
  const PreprocessConfig pc = PreprocessConfig::dinov2();
  std::vector<float> px(3 * 224 * 224);
  Image empty;
  EXPECT_THROW(vismem::preprocess(empty, pc, px.data()), vismem::Error);
  Image short_buffer = random_image(30, 20, 4);
  short_buffer.rgb.resize(100);
  EXPECT_THROW(vismem::preprocess(short_buffer, pc, px.data()), vismem::Error);
  EXPECT_THROW(vismem::normalize_to_chw(random_image(100, 100, 5), pc, px.data()), vismem::Error);
  EXPECT_THROW(vismem::resize_bicubic(random_image(10, 10, 6), 0, 5), vismem::Error);
  PreprocessConfig bad = pc;
  bad.crop = 0;
  EXPECT_THROW(vismem::preprocess(random_image(10, 10, 7), bad, px.data()), vismem::Error);
  bad = pc;
  bad.resize_shorter = -1;
  EXPECT_THROW(vismem::preprocess(random_image(10, 10, 8), bad, px.data()), vismem::Error);
}

TEST(Preprocess, ThreadsGiveTheSameResult) {
  // The pipeline preprocesses on many threads: nothing may be shared.
  const Image img = random_image(333, 250, 9);
  const auto want = run(img, PreprocessConfig::dinov2());
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      bool same = true;
      for (int r = 0; r < 5; ++r) same = same && run(img, PreprocessConfig::dinov2()) == want;
      ok[t] = same;
    });
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(ok[t]) << "thread " << t;
}
