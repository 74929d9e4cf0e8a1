// preprocess.h: image -> normalized float pixels, per-model presets (SPEC section 1).
//
// Basic usage:
//   vismem::Image img = vismem::decode_image_file("cat.jpg");            // image.h
//   vismem::PreprocessConfig pc = vismem::PreprocessConfig::dinov2();
//   std::vector<float> px(3 * pc.crop * pc.crop);
//   vismem::preprocess(img, pc, px.data());                              // 3 x crop x crop, CHW
//
// Resize is Pillow's antialiased bicubic (Image.resize(..., BICUBIC), the
// fixed-point ImagingResample, bit-exact) of the shorter side, then a center
// crop, then (x * scale - mean) / std per channel. Only the pixels that survive
// the crop are resampled (same values, less work).
// The two Rounding conventions differ in the crop offset (see below); the
// long side is int(short_target * long / short) in both.
// Thread safety: pure functions over values; safe to call from many threads.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vismem {

struct Image;  // image.h

struct PreprocessConfig {
  // Which library's size/offset arithmetic to copy. Both size the long side as
  // int(short_target * long / short) (torchvision Resize, HF get_resize_output_image_size).
  // torchvision: CenterCrop offset int(round((size - crop) / 2.0)), Python's
  //   round-half-to-even; a crop larger than the image pads (crop - size) // 2 zeros before.
  // hf: HF image processors' center_crop offset (size - crop) // 2 (floor), also
  //   when it pads (then ceil((crop - size) / 2) zeros before).
  // They disagree whenever size - crop is 4k + 3 (e.g. a 383-pixel side: 80 vs 79).
  enum class Rounding { torchvision, hf };

  int resize_shorter = 224;  // shorter side after resize
  int crop = 224;            // square center crop
  Rounding rounding = Rounding::torchvision;
  float scale = 1.0f;        // applied to uint8 values before mean/std; 1/255 is applied as
                             // x / 255.0f, as torchvision's ToTensor does, so results are bit-exact
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

// (width, height) after resizing the shorter side to pc.resize_shorter.
std::pair<int, int> resized_size(int width, int height, const PreprocessConfig& pc);

// Pillow's img.resize((width, height), Image.BICUBIC) for an RGB image
// (antialiased when shrinking; a copy when the size is unchanged).
Image resize_bicubic(const Image& img, int width, int height);

// uint8 HWC RGB (crop x crop x 3) -> float CHW normalized (3 x crop x crop).
// Throws vismem::Error if the image is not crop x crop.
void normalize_to_chw(const Image& cropped, const PreprocessConfig& pc, float* out);

// Both of the above: out is 3 * crop * crop floats, CHW.
void preprocess(const Image& img, const PreprocessConfig& pc, float* out);

}  // namespace vismem
