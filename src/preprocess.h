// preprocess.h: image -> normalized float pixels, per-model presets (SPEC section 1).
//
// Basic usage:
//   vismem::Image img = vismem::decode_image_file("cat.jpg");            // image.h
//   vismem::PreprocessConfig pc = vismem::PreprocessConfig::dinov2();
//   std::vector<float> px(3 * pc.crop * pc.crop);
//   vismem::preprocess(img, pc, px.data());                              // 3 x crop x crop, CHW
//
// Resize is PIL-compatible antialiased bicubic of the shorter side, then a
// center crop, then (x * scale - mean) / std per channel.
// Thread safety: pure functions over values.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vismem {

struct Image;  // image.h

struct PreprocessConfig {
  // How the long side's target length is rounded when the shorter side is resized:
  // torchvision: int(long * short_target / short) (truncation, torchvision.transforms.Resize)
  // hf: HF image processors' get_resize_output_image_size rounding.
  enum class Rounding { torchvision, hf };

  int resize_shorter = 224;  // shorter side after resize
  int crop = 224;            // square center crop
  Rounding rounding = Rounding::torchvision;
  float scale = 1.0f;        // applied to uint8 values before mean/std
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};

  static PreprocessConfig mobilenet();  // 224 / 224, (x - 128) / 128
  static PreprocessConfig dinov2();     // 256 / 224, ImageNet mean/std on [0,1]
  static PreprocessConfig clip();       // 224 / 224, CLIP mean/std on [0,1], HF rounding

  // Canonical text, part of a model fingerprint: "resize=256,crop=224,...".
  std::string describe() const;
};

// Resize (shorter side), center-crop, still uint8: crop x crop x 3, HWC RGB.
// This is what PIL + torchvision produce before ToTensor.
Image resize_and_crop(const Image& img, const PreprocessConfig& pc);

// uint8 HWC RGB (crop x crop x 3) -> float CHW normalized (3 x crop x crop).
void normalize_to_chw(const Image& cropped, const PreprocessConfig& pc, float* out);

// Both of the above: out is 3 * crop * crop floats, CHW.
void preprocess(const Image& img, const PreprocessConfig& pc, float* out);

}  // namespace vismem
