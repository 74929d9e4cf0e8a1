// image.h: decode JPEG / PNG / WebP / BMP files into 8-bit RGB.
//
// Basic usage:
//   vismem::Image img = vismem::decode_image_file("photo.jpg");   // throws vismem::Error if unreadable
//   // img.width, img.height, img.rgb (height * width * 3, row-major, RGB)
//
// Matches PIL's Image.open(path).convert("RGB"): grayscale is replicated,
// CMYK converted, alpha dropped (not composited), 16-bit PNG reduced to 8-bit,
// palettes expanded. Corrupt or truncated files throw vismem::Error naming the file.
// Thread safety: pure functions over values.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vismem {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major, RGB
};

Image decode_image_file(const std::string& path);
Image decode_image(const uint8_t* bytes, size_t size, const std::string& name);

// True if the file name has an image extension vismem reads (.jpg .jpeg .png .webp .bmp, any case).
bool is_image_path(const std::string& path);

}  // namespace vismem
