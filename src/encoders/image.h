// image.h: decode JPEG / PNG / WebP / BMP files into 8-bit RGB (and encode JPEG thumbnails).
//
// Basic usage:
//   vismem::Image img = vismem::decode_image_file("photo.jpg");   // throws vismem::Error if unreadable
//   // img.width, img.height, img.rgb (height * width * 3, row-major, RGB)
//   std::vector<uint8_t> jpg = vismem::encode_jpeg(img, 85);
//
// Matches PIL's Image.open(path).convert("RGB") (Pillow 12), because the
// reference pipelines (torchvision, HF) start from it:
// - the format is found from the leading bytes, never the file name;
// - JPEG: libjpeg-turbo, ISLOW DCT, fancy upsampling (PIL's defaults);
//   grayscale replicated; 4-channel JPEGs are taken as Adobe (inverted) CMYK
//   or YCCK and converted with PIL's cmyk2rgb formula;
// - PNG: palettes expanded (an index past the palette gives black, as in
//   Pillow), alpha and tRNS dropped (not composited), 1/2/4-bit gray scaled by
//   bit replication, 16-bit RGB/RGBA/gray/gray+alpha reduced to the high byte.
//   One difference from PIL: PIL opens 16-bit grayscale as "I;16" and its
//   convert("RGB") clips every value to 255, so most 16-bit gray photos come
//   out almost white; we decode the picture (the high byte, as PIL does for
//   16-bit RGB), so a 16-bit gray PNG embeds like its 8-bit version;
// - WebP: libwebp, still images only (animated WebP is refused);
// - BMP: uncompressed 1/4/8-bit paletted, 24-bit, 32-bit (BI_RGB or
//   byte-aligned BI_BITFIELDS), bottom-up and top-down. RLE and 16-bit are refused.
// EXIF orientation and ICC profiles are ignored, as PIL.open does.
// Corrupt or truncated files (including a JPEG that ends early, which
// libjpeg would pad with gray) throw vismem::Error naming the file. Images
// over 178,956,970 pixels are refused (PIL's decompression-bomb limit), in
// every format; and a header may not claim more pixels than the file's bytes
// can code (Huffman JPEG: 512 per byte, a hard bound of the format; PNG:
// deflate's 1032:1; arithmetic JPEG and WebP: 1024 per byte beyond 16 MP),
// so a tiny file cannot cost gigabytes.
// Thread safety: pure functions over values; safe to call from many threads.
#pragma once
#include <cstddef>
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

// "jpeg", "png", "webp", "bmp" from the leading bytes, or "" if none of these.
std::string detect_image_format(const uint8_t* bytes, size_t size);

// True if the file name has an image extension vismem reads (.jpg .jpeg .png .webp .bmp, any case).
bool is_image_path(const std::string& path);

// Baseline JPEG (libjpeg-turbo, 4:2:0, quality 1..100) of an RGB image, for
// thumbnails in explanations. Throws vismem::Error on an empty or inconsistent
// image or an out-of-range quality.
std::vector<uint8_t> encode_jpeg(const Image& img, int quality = 85);

}  // namespace vismem
