// Image decoding against PIL's output (fixtures/preprocess/*.decoded_u8.npy),
// against images this test writes with libjpeg / libpng / libwebp / by hand
// (exact expectations derived from PIL's conversion rules), and on corrupt,
// truncated and unsupported files (each must throw vismem::Error naming the file).
#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>
#include <webp/encode.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

// jpeglib.h needs <cstdio> first.
#include <jpeglib.h>

#include "error.h"
#include "image.h"
#include "npy.h"

namespace fs = std::filesystem;
using vismem::Image;

namespace {

const std::string kShared = VISMEM_SHARED_DIR;
const std::string kFixtures = kShared + "/fixtures/preprocess";

// A scratch folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("vismem_test_image_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path / name).string();
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }
};

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Fixture images: every NAME.decoded_u8.npy with its NAME.{png,jpg,...}.
struct Fixture {
  std::string name, image_path;
};
std::vector<Fixture> fixtures() {
  std::vector<Fixture> out;
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    const std::string f = e.path().filename().string();
    const std::string suffix = ".decoded_u8.npy";
    if (f.size() <= suffix.size() || f.compare(f.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = f.substr(0, f.size() - suffix.size());
    for (const char* ext : {".png", ".jpg", ".jpeg", ".webp", ".bmp"})
      if (fs::exists(kFixtures + "/" + name + ext)) out.push_back({name, kFixtures + "/" + name + ext});
  }
  std::sort(out.begin(), out.end(), [](const Fixture& a, const Fixture& b) { return a.name < b.name; });
  return out;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// Expects decoding to throw vismem::Error whose message names the file.
void expect_decode_error(const std::string& path, const std::string& why) {
  try {
    Image img = vismem::decode_image_file(path);
    ADD_FAILURE() << why << ": decoded " << img.width << "x" << img.height << " instead of throwing";
  } catch (const vismem::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << why << ": message lacks the file name: " << e.what();
  }
}

// ---- writers

std::vector<uint8_t> encode_jpeg(const std::vector<uint8_t>& px, int w, int h, int comps, J_COLOR_SPACE in_cs,
                                 J_COLOR_SPACE file_cs, int quality, bool progressive) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = comps;
  c.in_color_space = in_cs;
  jpeg_set_defaults(&c);
  jpeg_set_colorspace(&c, file_cs);  // CMYK / YCCK also write the Adobe marker
  jpeg_set_quality(&c, quality, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + size_t(c.next_scanline) * w * comps;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + size);
  std::free(buf);
  jpeg_destroy_compress(&c);
  return out;
}

void png_write_vec(png_structp png, png_bytep data, size_t n) {
  auto* v = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  v->insert(v->end(), data, data + n);
}
void png_flush_noop(png_structp) {}

// rows: one byte per sample for depth <= 8 (libpng packs sub-byte depths),
// big-endian pairs for depth 16.
std::vector<uint8_t> encode_png(int w, int h, int depth, int color, const std::vector<uint8_t>& rows,
                                bool interlace = false, const std::vector<png_color>& plte = {},
                                const std::vector<uint8_t>& trns = {}) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    ADD_FAILURE() << "libpng could not write the test image";
    return {};
  }
  png_set_write_fn(png, &out, png_write_vec, png_flush_noop);
  png_set_check_for_invalid_index(png, 0);  // the test writes an index past the palette on purpose
  png_set_IHDR(png, info, png_uint_32(w), png_uint_32(h), depth, color,
               interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!plte.empty()) png_set_PLTE(png, info, plte.data(), int(plte.size()));
  if (!trns.empty()) {
    png_color_16 trns_color{};
    trns_color.gray = 1;
    if (color == PNG_COLOR_TYPE_PALETTE)
      png_set_tRNS(png, info, trns.data(), int(trns.size()), nullptr);
    else
      png_set_tRNS(png, info, nullptr, 0, &trns_color);
  }
  png_write_info(png, info);
  if (depth < 8) png_set_packing(png);
  const int channels = color == PNG_COLOR_TYPE_RGB ? 3 : color == PNG_COLOR_TYPE_RGBA ? 4
                       : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  const size_t row_bytes = size_t(w) * channels * (depth == 16 ? 2 : 1);
  std::vector<png_bytep> ptrs(h);
  for (int y = 0; y < h; ++y) ptrs[y] = const_cast<uint8_t*>(rows.data()) + y * row_bytes;
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

struct BmpSpec {
  int bpp = 24;
  bool top_down = false;
  bool core_header = false;           // 12-byte OS/2 header, 3-byte palette entries
  bool bitfields = false;             // 32-bit BI_BITFIELDS with masks below
  uint32_t masks[3] = {0xFF0000, 0xFF00, 0xFF};
  std::vector<uint8_t> palette_rgb;   // bpp <= 8
};

void put16(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  v[at] = uint8_t(x);
  v[at + 1] = uint8_t(x >> 8);
}
void put32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  for (int i = 0; i < 4; ++i) v[at + i] = uint8_t(x >> (8 * i));
}

// pixels: RGB for 24/32-bit, palette indices for <= 8 bits.
std::vector<uint8_t> encode_bmp(int w, int h, const std::vector<uint8_t>& pixels, const BmpSpec& s) {
  const size_t hsize = s.core_header ? 12 : 40;
  const size_t masks = s.bitfields ? 12 : 0;
  const size_t entry = s.core_header ? 3 : 4;
  const size_t colors = s.bpp <= 8 ? s.palette_rgb.size() / 3 : 0;
  const size_t offset = 14 + hsize + masks + colors * entry;
  const size_t stride = (size_t(w) * s.bpp + 31) / 32 * 4;
  std::vector<uint8_t> b(offset + stride * h, 0);
  b[0] = 'B';
  b[1] = 'M';
  put32(b, 2, uint32_t(b.size()));
  put32(b, 10, uint32_t(offset));
  put32(b, 14, uint32_t(hsize));
  if (s.core_header) {
    put16(b, 18, uint32_t(w));
    put16(b, 20, uint32_t(h));
    put16(b, 22, 1);
    put16(b, 24, uint32_t(s.bpp));
  } else {
    put32(b, 18, uint32_t(w));
    put32(b, 22, uint32_t(s.top_down ? -h : h));
    put16(b, 26, 1);
    put16(b, 28, uint32_t(s.bpp));
    put32(b, 30, s.bitfields ? 3 : 0);
    put32(b, 46, uint32_t(colors));
    for (int i = 0; s.bitfields && i < 3; ++i) put32(b, 54 + 4 * i, s.masks[i]);
  }
  for (size_t i = 0; i < colors; ++i) {
    uint8_t* e = &b[14 + hsize + masks + i * entry];
    e[0] = s.palette_rgb[3 * i + 2];
    e[1] = s.palette_rgb[3 * i + 1];
    e[2] = s.palette_rgb[3 * i + 0];
  }
  auto byte_of = [](uint32_t m) { int k = 0; while (m > 0xFF) { m >>= 8; ++k; } return k; };
  for (int y = 0; y < h; ++y) {
    uint8_t* row = &b[offset + stride * size_t(s.top_down ? y : h - 1 - y)];
    for (int x = 0; x < w; ++x) {
      if (s.bpp <= 8) {
        const int per = 8 / s.bpp;
        row[x / per] |= uint8_t(pixels[size_t(y) * w + x] << (8 - s.bpp * (x % per + 1)));
      } else {
        const uint8_t* p = &pixels[(size_t(y) * w + x) * 3];
        uint8_t* o = row + size_t(x) * (s.bpp / 8);
        if (s.bitfields) {
          for (int c = 0; c < 3; ++c) o[byte_of(s.masks[c])] = p[c];
        } else {
          o[0] = p[2];
          o[1] = p[1];
          o[2] = p[0];
          if (s.bpp == 32) o[3] = 0x5A;  // unused byte: must be ignored
        }
      }
    }
  }
  return b;
}

void expect_rgb_eq(const Image& img, int w, int h, const std::vector<uint8_t>& rgb, const std::string& what) {
  ASSERT_EQ(img.width, w) << what;
  ASSERT_EQ(img.height, h) << what;
  ASSERT_EQ(img.rgb.size(), rgb.size()) << what;
  size_t diff = 0;
  for (size_t i = 0; i < rgb.size(); ++i) diff += img.rgb[i] != rgb[i];
  EXPECT_EQ(diff, 0u) << what << ": " << diff << " of " << rgb.size() << " values differ";
}

}  // namespace

TEST(ImageDecode, FixturesMatchPilExactly) {
  const auto fx = fixtures();
  ASSERT_GE(fx.size(), 8u) << "fixtures missing under " << kFixtures;
  for (const auto& f : fx) {
    const Image img = vismem::decode_image_file(f.image_path);
    const vismem::NpyArray ref = vismem::read_npy(kFixtures + "/" + f.name + ".decoded_u8.npy");
    ASSERT_EQ(ref.shape.size(), 3u);
    ASSERT_EQ(img.height, ref.shape[0]) << f.name;
    ASSERT_EQ(img.width, ref.shape[1]) << f.name;
    size_t diff = 0;
    int max_diff = 0;
    for (size_t i = 0; i < img.rgb.size(); ++i) {
      const int d = std::abs(int(img.rgb[i]) - int(ref.data[i]));
      diff += d != 0;
      max_diff = std::max(max_diff, d);
    }
    std::printf("  decode %-20s %4dx%-4d vs PIL: %zu values differ, max diff %d\n", f.name.c_str(), img.width,
                img.height, diff, max_diff);
    EXPECT_EQ(diff, 0u) << f.name;
  }
}

TEST(ImageDecode, FormatComesFromBytesNotExtension) {
  TempDir tmp;
  for (const auto& f : fixtures()) {
    const std::string wrong = f.image_path.ends_with(".png") ? ".jpg" : ".png";
    const std::string p = tmp.write(f.name + wrong, read_file(f.image_path));
    const Image img = vismem::decode_image_file(p);
    const vismem::NpyArray ref = vismem::read_npy(kFixtures + "/" + f.name + ".decoded_u8.npy");
    expect_rgb_eq(img, int(ref.shape[1]), int(ref.shape[0]), ref.data, f.name + wrong);
  }
  const auto png = read_file(fixtures().front().image_path);
  EXPECT_EQ(vismem::detect_image_format(png.data(), png.size()), "png");
  const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a'};
  EXPECT_EQ(vismem::detect_image_format(gif, sizeof gif), "");
}

TEST(ImageDecode, GrayscaleJpegIsReplicated) {
  const int w = 40, h = 24;
  std::vector<uint8_t> gray(w * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) gray[y * w + x] = uint8_t(x * 6 + y);
  const auto jpg = encode_jpeg(gray, w, h, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 95, false);
  const Image img = vismem::decode_image(jpg.data(), jpg.size(), "gray.jpg");
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  int max_err = 0;
  for (int i = 0; i < w * h; ++i) {
    ASSERT_EQ(img.rgb[3 * i], img.rgb[3 * i + 1]);
    ASSERT_EQ(img.rgb[3 * i], img.rgb[3 * i + 2]);
    max_err = std::max(max_err, std::abs(int(img.rgb[3 * i]) - int(gray[i])));
  }
  EXPECT_LE(max_err, 6) << "quality-95 JPEG of a smooth ramp";
}

TEST(ImageDecode, ProgressiveJpegEqualsBaseline) {
  // Same quantized coefficients, different scan order: identical pixels.
  const int w = 75, h = 50;
  std::vector<uint8_t> rgb = random_bytes(size_t(w) * h * 3, 7);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(rgb[i] / 4 + (i % 300) / 2);
  const auto base = encode_jpeg(rgb, w, h, 3, JCS_RGB, JCS_YCbCr, 90, false);
  const auto prog = encode_jpeg(rgb, w, h, 3, JCS_RGB, JCS_YCbCr, 90, true);
  ASSERT_NE(base, prog);
  const Image a = vismem::decode_image(base.data(), base.size(), "base.jpg");
  const Image b = vismem::decode_image(prog.data(), prog.size(), "prog.jpg");
  expect_rgb_eq(b, a.width, a.height, a.rgb, "progressive vs baseline");
}

TEST(ImageDecode, CmykAndYcckJpegAsPil) {
  // PIL reads 4-channel JPEGs as Adobe CMYK, stored inverted (255 = no ink),
  // and converts with cmyk2rgb: R = (255 - K) - round(C * (255 - K) / 255).
  // Inks (c, m, y, k) and the RGB that formula gives, worked out by hand.
  struct Case {
    uint8_t ink[4];
    uint8_t rgb[3];
  };
  const Case cases[] = {
      {{0, 0, 0, 0}, {255, 255, 255}},   {{255, 0, 0, 0}, {0, 255, 255}},    {{0, 255, 0, 0}, {255, 0, 255}},
      {{0, 0, 255, 0}, {255, 255, 0}},   {{0, 0, 0, 255}, {0, 0, 0}},        {{0, 0, 0, 128}, {127, 127, 127}},
      {{128, 0, 0, 0}, {127, 255, 255}}, {{255, 128, 0, 64}, {0, 95, 191}},
  };
  const int n = int(std::size(cases)), bs = 16, w = bs * n, h = bs;  // one flat 16x16 block per case
  std::vector<uint8_t> stored(size_t(w) * h * 4);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 4; ++c) stored[(size_t(y) * w + x) * 4 + c] = uint8_t(255 - cases[x / bs].ink[c]);
  for (const bool ycck : {false, true}) {
    const auto jpg = encode_jpeg(stored, w, h, 4, JCS_CMYK, ycck ? JCS_YCCK : JCS_CMYK, 100, false);
    const Image img = vismem::decode_image(jpg.data(), jpg.size(), ycck ? "ycck.jpg" : "cmyk.jpg");
    ASSERT_EQ(img.width, w);
    // Flat blocks at quality 100 survive CMYK exactly. YCCK adds a color
    // transform (+-1 each way) and 2x subsampled chroma, which fancy upsampling
    // blends across block edges: check block interiors there.
    const int tol = ycck ? 2 : 0, margin = ycck ? 2 : 0;
    for (int i = 0; i < n; ++i)
      for (int y = 0; y < h; ++y)
        for (int x = i * bs + margin; x < (i + 1) * bs - margin; ++x)
          for (int c = 0; c < 3; ++c)
            ASSERT_NEAR(int(img.rgb[(size_t(y) * w + x) * 3 + c]), int(cases[i].rgb[c]), tol)
                << (ycck ? "YCCK" : "CMYK") << " case " << i << " channel " << c;
  }
}

TEST(ImageDecode, Png16Bit) {
  const int w = 5, h = 3;
  std::mt19937 rng(3);
  // 16-bit RGB and RGBA: PIL keeps the high byte (truncation, not rounding).
  for (const int color : {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA}) {
    const int ch = color == PNG_COLOR_TYPE_RGB ? 3 : 4;
    std::vector<uint8_t> rows(size_t(w) * h * ch * 2);
    std::vector<uint8_t> expect;
    for (int p = 0; p < w * h; ++p)
      for (int c = 0; c < ch; ++c) {
        const uint16_t v = uint16_t(rng());
        rows[(size_t(p) * ch + c) * 2] = uint8_t(v >> 8);
        rows[(size_t(p) * ch + c) * 2 + 1] = uint8_t(v);
        if (c < 3) expect.push_back(uint8_t(v >> 8));
      }
    const auto png = encode_png(w, h, 16, color, rows);
    expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "rgb16.png"), w, h, expect, "16-bit RGB(A)");
  }
  // 16-bit gray: the picture, i.e. the high byte (PIL would clip each value to
  // 255 and show it almost white: the one place we differ, see image.h).
  const uint16_t grays[] = {0, 1, 127, 255, 256, 1000, 0x8000, 0xFFFF, 0x00FF, 0x0100, 42, 200, 300, 254, 0x7F80};
  std::vector<uint8_t> rows, expect;
  for (const uint16_t v : grays) {
    rows.push_back(uint8_t(v >> 8));
    rows.push_back(uint8_t(v));
    expect.insert(expect.end(), {uint8_t(v >> 8), uint8_t(v >> 8), uint8_t(v >> 8)});
  }
  auto png = encode_png(w, h, 16, PNG_COLOR_TYPE_GRAY, rows);
  expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "gray16.png"), w, h, expect, "16-bit gray");
  // The same picture saved as 8-bit and as 16-bit gray (v * 257) decodes to the same pixels.
  {
    std::vector<uint8_t> rows8, rows16, expect8;
    for (int p = 0; p < w * h; ++p) {
      const uint8_t v = uint8_t(rng());
      rows8.push_back(v);
      rows16.insert(rows16.end(), {v, v});  // v * 257, big-endian
      expect8.insert(expect8.end(), {v, v, v});
    }
    const auto p8 = encode_png(w, h, 8, PNG_COLOR_TYPE_GRAY, rows8);
    const auto p16 = encode_png(w, h, 16, PNG_COLOR_TYPE_GRAY, rows16);
    expect_rgb_eq(vismem::decode_image(p8.data(), p8.size(), "gray8.png"), w, h, expect8, "8-bit gray");
    expect_rgb_eq(vismem::decode_image(p16.data(), p16.size(), "gray16b.png"), w, h, expect8, "16-bit gray = 8-bit gray");
  }
  // 16-bit gray + alpha: the gray's high byte, replicated.
  rows.clear();
  expect.clear();
  for (const uint16_t v : grays) {
    rows.insert(rows.end(), {uint8_t(v >> 8), uint8_t(v), 0x12, 0x34});
    expect.insert(expect.end(), {uint8_t(v >> 8), uint8_t(v >> 8), uint8_t(v >> 8)});
  }
  png = encode_png(w, h, 16, PNG_COLOR_TYPE_GRAY_ALPHA, rows);
  expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "gray_alpha16.png"), w, h, expect, "16-bit gray+alpha");
}

TEST(ImageDecode, PngPaletteAndLowBitDepths) {
  const std::vector<png_color> plte = {{10, 20, 30}, {200, 100, 0}, {0, 255, 7}};
  const int w = 7, h = 2;
  // Index 3 is past the 3-entry palette: Pillow's palette is zero-filled, so black.
  const std::vector<uint8_t> idx = {0, 1, 2, 3, 2, 1, 0, 1, 1, 0, 0, 2, 3, 3};
  std::vector<uint8_t> expect;
  for (const uint8_t i : idx) {
    if (i < plte.size())
      expect.insert(expect.end(), {plte[i].red, plte[i].green, plte[i].blue});
    else
      expect.insert(expect.end(), {0, 0, 0});
  }
  for (const int depth : {2, 4, 8}) {
    // tRNS is ignored by convert("RGB").
    const auto png = encode_png(w, h, depth, PNG_COLOR_TYPE_PALETTE, idx, false, plte, {255, 0, 128});
    expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "palette.png"), w, h, expect,
                  "palette depth " + std::to_string(depth));
  }
  // 1/2/4-bit gray: bit replication (255, 85, 17 per step), as PIL's "1", "L;2", "L;4".
  for (const int depth : {1, 2, 4}) {
    const int levels = 1 << depth;
    std::vector<uint8_t> px, want;
    for (int i = 0; i < w * h; ++i) {
      const uint8_t v = uint8_t((i * 5) % levels);
      px.push_back(v);
      const uint8_t e = uint8_t(v * 255 / (levels - 1));
      want.insert(want.end(), {e, e, e});
    }
    const auto png = encode_png(w, h, depth, PNG_COLOR_TYPE_GRAY, px, false, {}, {1});
    expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "gray_low.png"), w, h, want,
                  "gray depth " + std::to_string(depth));
  }
}

TEST(ImageDecode, PngInterlacedAndAlphaDropped) {
  const int w = 19, h = 11;
  const auto rgba = random_bytes(size_t(w) * h * 4, 11);
  std::vector<uint8_t> rgb;
  for (size_t i = 0; i < rgba.size(); i += 4) rgb.insert(rgb.end(), {rgba[i], rgba[i + 1], rgba[i + 2]});
  for (const bool interlace : {false, true}) {
    auto png = encode_png(w, h, 8, PNG_COLOR_TYPE_RGBA, rgba, interlace);
    expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "rgba.png"), w, h, rgb,
                  interlace ? "Adam7 RGBA" : "RGBA");
    png = encode_png(w, h, 8, PNG_COLOR_TYPE_RGB, rgb, interlace);
    expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "rgb.png"), w, h, rgb, interlace ? "Adam7 RGB" : "RGB");
  }
  // 8-bit gray + alpha: gray replicated.
  std::vector<uint8_t> ga, want;
  for (int i = 0; i < w * h; ++i) {
    ga.insert(ga.end(), {rgba[4 * i], rgba[4 * i + 3]});
    want.insert(want.end(), {rgba[4 * i], rgba[4 * i], rgba[4 * i]});
  }
  const auto png = encode_png(w, h, 8, PNG_COLOR_TYPE_GRAY_ALPHA, ga);
  expect_rgb_eq(vismem::decode_image(png.data(), png.size(), "ga.png"), w, h, want, "gray+alpha");
}

TEST(ImageDecode, WebP) {
  const int w = 33, h = 21;
  const auto rgb = random_bytes(size_t(w) * h * 3, 5);
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(rgb.data(), w, h, w * 3, &out);
  ASSERT_GT(n, 0u);
  std::vector<uint8_t> lossless(out, out + n);
  WebPFree(out);
  expect_rgb_eq(vismem::decode_image(lossless.data(), lossless.size(), "x.webp"), w, h, rgb, "lossless WebP");

  // Lossless with alpha (exact mode keeps the color under transparent pixels): alpha dropped.
  auto rgba = random_bytes(size_t(w) * h * 4, 6);
  for (size_t i = 3; i < rgba.size(); i += 32) rgba[i] = 0;
  WebPConfig cfg;
  ASSERT_TRUE(WebPConfigInit(&cfg));
  cfg.lossless = 1;
  cfg.exact = 1;
  WebPPicture pic;
  ASSERT_TRUE(WebPPictureInit(&pic));
  pic.use_argb = 1;
  pic.width = w;
  pic.height = h;
  ASSERT_TRUE(WebPPictureImportRGBA(&pic, rgba.data(), w * 4));
  WebPMemoryWriter wr;
  WebPMemoryWriterInit(&wr);
  pic.writer = WebPMemoryWrite;
  pic.custom_ptr = &wr;
  ASSERT_TRUE(WebPEncode(&cfg, &pic));
  WebPPictureFree(&pic);
  std::vector<uint8_t> alpha(wr.mem, wr.mem + wr.size);
  WebPMemoryWriterClear(&wr);
  std::vector<uint8_t> want;
  for (size_t i = 0; i < rgba.size(); i += 4) want.insert(want.end(), {rgba[i], rgba[i + 1], rgba[i + 2]});
  expect_rgb_eq(vismem::decode_image(alpha.data(), alpha.size(), "a.webp"), w, h, want, "lossless RGBA WebP");

  // Lossy: a smooth image comes back close.
  std::vector<uint8_t> smooth(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) smooth[(size_t(y) * w + x) * 3 + c] = uint8_t(40 + 4 * x + 3 * y + 20 * c);
  n = WebPEncodeRGB(smooth.data(), w, h, w * 3, 95, &out);
  ASSERT_GT(n, 0u);
  std::vector<uint8_t> lossy(out, out + n);
  WebPFree(out);
  const Image img = vismem::decode_image(lossy.data(), lossy.size(), "lossy.webp");
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  double sq = 0;
  for (size_t i = 0; i < smooth.size(); ++i) sq += (double(img.rgb[i]) - smooth[i]) * (double(img.rgb[i]) - smooth[i]);
  EXPECT_LT(std::sqrt(sq / smooth.size()), 8.0) << "lossy WebP RMS error (4:2:0 chroma)";
}

TEST(ImageDecode, BmpRoundTrip) {
  const int w = 13, h = 7;  // odd width: rows are padded to 4 bytes
  const auto rgb = random_bytes(size_t(w) * h * 3, 9);
  struct Variant {
    const char* what;
    BmpSpec spec;
  };
  std::vector<Variant> variants;
  variants.push_back({"24-bit bottom-up", {}});
  variants.push_back({"24-bit top-down", {}});
  variants.back().spec.top_down = true;
  variants.push_back({"24-bit OS/2 core header", {}});
  variants.back().spec.core_header = true;
  variants.push_back({"32-bit BI_RGB", {}});
  variants.back().spec.bpp = 32;
  variants.push_back({"32-bit bitfields BGRX", {}});
  variants.back().spec.bpp = 32;
  variants.back().spec.bitfields = true;
  variants.push_back({"32-bit bitfields RGBX order", {}});
  variants.back().spec.bpp = 32;
  variants.back().spec.bitfields = true;
  variants.back().spec.masks[0] = 0xFF;
  variants.back().spec.masks[1] = 0xFF00;
  variants.back().spec.masks[2] = 0xFF0000;
  for (const auto& v : variants) {
    const auto bmp = encode_bmp(w, h, rgb, v.spec);
    expect_rgb_eq(vismem::decode_image(bmp.data(), bmp.size(), "x.bmp"), w, h, rgb, v.what);
  }
  // Paletted 1/4/8-bit, bottom-up and top-down.
  for (const int bpp : {1, 4, 8})
    for (const bool top_down : {false, true}) {
      BmpSpec s;
      s.bpp = bpp;
      s.top_down = top_down;
      const int colors = 1 << bpp;
      s.palette_rgb = random_bytes(size_t(colors) * 3, uint32_t(bpp));
      std::vector<uint8_t> idx(size_t(w) * h), want;
      for (size_t i = 0; i < idx.size(); ++i) {
        idx[i] = uint8_t((i * 7 + i / 5) % colors);
        want.insert(want.end(), s.palette_rgb.begin() + idx[i] * 3, s.palette_rgb.begin() + idx[i] * 3 + 3);
      }
      const auto bmp = encode_bmp(w, h, idx, s);
      expect_rgb_eq(vismem::decode_image(bmp.data(), bmp.size(), "p.bmp"), w, h, want,
                    std::to_string(bpp) + "-bit paletted" + (top_down ? " top-down" : ""));
    }
}

TEST(ImageDecode, CorruptAndTruncatedFilesThrow) {
  TempDir tmp;
  auto variants = [&](const std::string& tag, const std::vector<uint8_t>& good, std::vector<size_t> cuts) {
    for (const size_t cut : cuts) {
      ASSERT_LT(cut, good.size());
      const std::vector<uint8_t> bad(good.begin(), good.begin() + long(cut));
      expect_decode_error(tmp.write(tag + "_cut" + std::to_string(cut), bad), tag + " truncated to " + std::to_string(cut));
    }
  };
  // JPEG: cut inside the headers, inside the scan, and near the end (libjpeg alone would pad with gray).
  const auto jpg = read_file(kFixtures + "/img2_500x375.jpg");
  variants("jpeg", jpg, {3, 20, 300, jpg.size() / 2, jpg.size() * 9 / 10, jpg.size() - 64});
  const auto prog = encode_jpeg(random_bytes(64 * 48 * 3, 1), 64, 48, 3, JCS_RGB, JCS_YCbCr, 85, true);
  variants("progressive", prog, {prog.size() / 2, prog.size() - 40});
  {
    auto bad = jpg;  // the SOF0 marker's sample precision byte: 8 -> 12
    const uint8_t sof0[] = {0xFF, 0xC0};
    const auto sof = std::search(bad.begin(), bad.end(), std::begin(sof0), std::end(sof0));
    ASSERT_NE(sof, bad.end());
    const size_t sof_at = size_t(sof - bad.begin());
    bad[sof_at + 4] = 12;
    expect_decode_error(tmp.write("jpeg_precision", bad), "12-bit JPEG");
    bad = jpg;  // SOF0 claims 7 components, more than its segment holds
    bad[sof_at + 9] = 7;
    expect_decode_error(tmp.write("jpeg_components", bad), "JPEG with a bad frame header");
  }
  // PNG: cuts; a flipped byte in IHDR and in IDAT (CRC mismatch in a critical chunk).
  const auto png = read_file(kFixtures + "/img0_320x240.png");
  variants("png", png, {4, 8, 20, 40, png.size() / 2, png.size() - 100});
  for (const size_t at : {size_t(18), png.size() / 2}) {
    auto bad = png;
    bad[at] ^= 0x40;
    expect_decode_error(tmp.write("png_flip" + std::to_string(at), bad), "PNG with a flipped byte");
  }
  {
    // A valid-CRC IHDR claiming 12000x12000 pixels (under the pixel limit) in a
    // 160 KB file: refused before allocating 432 MB.
    auto bad = png;
    const uint8_t big[4] = {0, 0, 0x2E, 0xE0};  // 12000, big-endian
    std::copy(big, big + 4, bad.begin() + 16);
    std::copy(big, big + 4, bad.begin() + 20);
    const uLong crc = crc32(crc32(0, nullptr, 0), bad.data() + 12, 17);
    for (int i = 0; i < 4; ++i) bad[29 + i] = uint8_t(crc >> (24 - 8 * i));
    expect_decode_error(tmp.write("png_huge", bad), "PNG with an impossible size");
  }
  // WebP: cuts; a broken chunk tag.
  uint8_t* out = nullptr;
  const auto rgb = random_bytes(48 * 32 * 3, 2);
  size_t n = WebPEncodeRGB(rgb.data(), 48, 32, 48 * 3, 80, &out);
  ASSERT_GT(n, 0u);
  const std::vector<uint8_t> webp(out, out + n);
  WebPFree(out);
  variants("webp", webp, {12, 30, webp.size() / 2, webp.size() - 10});
  {
    auto bad = webp;
    bad[12] = 'X';  // "VP8 " -> "XP8 "
    expect_decode_error(tmp.write("webp_tag", bad), "WebP with an unknown chunk");
  }
  // BMP: cuts; unsupported or impossible headers.
  const auto bmp = encode_bmp(13, 7, rgb, BmpSpec{});
  variants("bmp", bmp, {2, 16, 40, bmp.size() - 1});
  struct Patch {
    const char* what;
    size_t at;
    uint32_t value;
    bool wide;
  };
  const Patch patches[] = {
      {"16-bit BMP", 28, 16, false},          {"RLE8 BMP", 30, 1, true},
      {"bad header size", 14, 20, true},      {"zero width", 18, 0, true},
      {"pixel data past the end", 10, 5000, true}, {"40000x40000 (bomb)", 18, 40000, true},
  };
  for (const auto& p : patches) {
    auto bad = bmp;
    if (p.wide) put32(bad, p.at, p.value); else put16(bad, p.at, p.value);
    if (std::string(p.what).find("bomb") != std::string::npos) put32(bad, 22, 40000);
    expect_decode_error(tmp.write(std::string("bmp_") + std::to_string(p.at) + "_" + std::to_string(p.value), bad), p.what);
  }
  // Not an image at all.
  expect_decode_error(tmp.write("empty.png", {}), "empty file");
  expect_decode_error(tmp.write("noise.jpg", random_bytes(1000, 4)), "random bytes");
  expect_decode_error(tmp.write("anim.gif", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0}), "GIF");
  expect_decode_error((tmp.path / "missing.jpg").string(), "missing file");
  fs::create_directories(tmp.path / "folder.jpg");
  expect_decode_error((tmp.path / "folder.jpg").string(), "a directory");
}

TEST(ImageDecode, MutatedFilesDecodeOrThrow) {
  // Random truncations and overwritten bytes (headers favored): each file must
  // either decode to a consistent image or throw vismem::Error; never crash.
  const auto rgb = random_bytes(24 * 18 * 3, 12);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files;
  files.push_back({"baseline.jpg", encode_jpeg(rgb, 24, 18, 3, JCS_RGB, JCS_YCbCr, 80, false)});
  files.push_back({"progressive.jpg", encode_jpeg(rgb, 24, 18, 3, JCS_RGB, JCS_YCbCr, 80, true)});
  files.push_back({"rgb.png", encode_png(24, 18, 8, PNG_COLOR_TYPE_RGB, rgb, true)});
  files.push_back({"palette.png", encode_png(24, 18, 4, PNG_COLOR_TYPE_PALETTE, std::vector<uint8_t>(24 * 18, 1), false,
                                             {{1, 2, 3}, {4, 5, 6}})});
  uint8_t* out = nullptr;
  size_t n = WebPEncodeRGB(rgb.data(), 24, 18, 24 * 3, 70, &out);
  files.push_back({"lossy.webp", std::vector<uint8_t>(out, out + n)});
  WebPFree(out);
  n = WebPEncodeLosslessRGB(rgb.data(), 24, 18, 24 * 3, &out);
  files.push_back({"lossless.webp", std::vector<uint8_t>(out, out + n)});
  WebPFree(out);
  files.push_back({"rgb.bmp", encode_bmp(24, 18, rgb, BmpSpec{})});
  BmpSpec pal;
  pal.bpp = 8;
  pal.palette_rgb = random_bytes(256 * 3, 13);
  files.push_back({"pal.bmp", encode_bmp(24, 18, std::vector<uint8_t>(rgb.begin(), rgb.begin() + 24 * 18), pal)});
  std::mt19937 rng(99);
  for (const auto& [name, good] : files) {
    int decoded = 0, errors = 0;
    for (int it = 0; it < 150; ++it) {
      std::vector<uint8_t> b = good;
      if (it % 3 == 0) b.resize(rng() % b.size());
      for (int k = 0, flips = 1 + int(rng() % 6); k < flips && !b.empty(); ++k)
        b[rng() % 4 == 0 ? rng() % std::min<size_t>(b.size(), 64) : rng() % b.size()] = uint8_t(rng());
      try {
        const Image img = vismem::decode_image(b.data(), b.size(), name);
        ASSERT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3) << name;
        ++decoded;
      } catch (const vismem::Error&) {
        ++errors;
      }
    }
    EXPECT_GT(errors, 0) << name;
    std::printf("  mutated %-16s %3d decoded, %3d rejected\n", name.c_str(), decoded, errors);
  }
}

TEST(ImageDecode, RealPhotos) {
  // A few images from each data set: they decode, with a plausible size and content.
  int decoded = 0;
  for (const char* set : {"imagenette2/val", "tiny-imagenet/val"}) {
    const fs::path root = fs::path(kShared) / "data" / set;
    if (!fs::exists(root)) continue;
    std::vector<fs::path> classes;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) classes.push_back(e.path());
    std::sort(classes.begin(), classes.end());
    for (size_t c = 0; c < std::min<size_t>(classes.size(), 3); ++c) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(classes[c]))
        if (vismem::is_image_path(e.path().string())) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (size_t i = 0; i < std::min<size_t>(files.size(), 3); ++i) {
        const Image img = vismem::decode_image_file(files[i].string());
        EXPECT_GE(img.width, 16) << files[i];
        EXPECT_GE(img.height, 16) << files[i];
        EXPECT_LE(img.width, 8192) << files[i];
        EXPECT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3) << files[i];
        const auto [lo, hi] = std::minmax_element(img.rgb.begin(), img.rgb.end());
        EXPECT_GT(int(*hi) - int(*lo), 30) << files[i] << " looks blank";
        ++decoded;
      }
    }
  }
  if (decoded == 0) GTEST_SKIP() << "no data sets under " << kShared << "/data";
  std::printf("  decoded %d real photos\n", decoded);
}

TEST(ImagePath, Extensions) {
  for (const char* p : {"a.jpg", "b.JPEG", "dir.x/c.Png", "d.webp", "e.BMP", "/x/y/f.jpeg"})
    EXPECT_TRUE(vismem::is_image_path(p)) << p;
  for (const char* p : {"a.gif", "b", "dir.jpg/readme", "c.jpg.txt", "d.tiff", ".", ""})
    EXPECT_FALSE(vismem::is_image_path(p)) << p;
}

namespace {

// The JPEG with its frame header (SOF0 / SOF2) patched to claim w x h pixels.
std::vector<uint8_t> claim_jpeg_size(std::vector<uint8_t> jpg, int w, int h) {
  for (size_t i = 2; i + 9 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
      jpg[i + 5] = uint8_t(h >> 8), jpg[i + 6] = uint8_t(h), jpg[i + 7] = uint8_t(w >> 8), jpg[i + 8] = uint8_t(w);
      return jpg;
    }
  ADD_FAILURE() << "no frame header";
  return jpg;
}

std::string decode_error(const std::vector<uint8_t>& bytes, const std::string& name) {
  try {
    vismem::decode_image(bytes.data(), bytes.size(), name);
  } catch (const vismem::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// A few hundred bytes whose header claims 13000 x 13000 (169 MP, under PIL's
// pixel limit) used to decode to a blank image at 0.5-1 GB each: now refused
// before anything is allocated, in every format.
TEST(ImageDecode, HeaderClaimingMorePixelsThanTheBytesCodeIsRefused) {
  const int w = 16, h = 16;
  const auto rgb = random_bytes(size_t(w) * h * 3, 9);
  for (const bool progressive : {false, true}) {
    const auto jpg = claim_jpeg_size(encode_jpeg(rgb, w, h, 3, JCS_RGB, JCS_YCbCr, 80, progressive), 13000, 13000);
    ASSERT_LT(jpg.size(), 2000u);
    const std::string err = decode_error(jpg, "bomb.jpg");
    EXPECT_NE(err.find("bomb.jpg: JPEG header claims 13000x13000 pixels"), std::string::npos) << err;
    EXPECT_NE(err.find("decompression bomb"), std::string::npos) << err;
  }
  // Lossless WebP: width-1 and height-1 are 14-bit fields after the VP8L signature byte.
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeLosslessRGB(rgb.data(), w, h, w * 3, &out);
  ASSERT_GT(n, 25u);
  std::vector<uint8_t> webp(out, out + n);
  WebPFree(out);
  ASSERT_EQ(std::memcmp(webp.data() + 12, "VP8L", 4), 0);
  uint32_t bits = uint32_t(webp[21]) | uint32_t(webp[22]) << 8 | uint32_t(webp[23]) << 16 | uint32_t(webp[24]) << 24;
  bits = (bits & ~((1u << 28) - 1)) | (13000u - 1) | ((13000u - 1) << 14);
  for (int i = 0; i < 4; ++i) webp[21 + i] = uint8_t(bits >> (8 * i));
  const std::string err = decode_error(webp, "bomb.webp");
  EXPECT_NE(err.find("bomb.webp: WebP header claims 13000x13000 pixels"), std::string::npos) << err;
  // Over PIL's limit stays refused in every format too.
  const auto big = claim_jpeg_size(encode_jpeg(rgb, w, h, 3, JCS_RGB, JCS_YCbCr, 80, false), 20000, 20000);
  EXPECT_NE(decode_error(big, "huge.jpg").find("more than the 178956970 pixels"), std::string::npos);
}

// The bound costs nothing real: the most compressible picture there is (one
// flat color), 4 MP in a few kilobytes, still decodes, baseline and progressive.
TEST(ImageDecode, FlatLargeJpegStillDecodes) {
  const int w = 2048, h = 2048;
  const std::vector<uint8_t> flat(size_t(w) * h * 3, 77);
  for (const bool progressive : {false, true}) {
    const auto jpg = encode_jpeg(flat, w, h, 3, JCS_RGB, JCS_YCbCr, 90, progressive);
    const Image img = vismem::decode_image(jpg.data(), jpg.size(), "flat.jpg");
    EXPECT_EQ(img.width, w);
    EXPECT_EQ(img.height, h);
    EXPECT_NEAR(int(img.rgb[size_t(w) * h * 3 / 2]), 77, 2);
    std::printf("  flat %dx%d %s JPEG: %zu bytes (%.0f pixels per byte; the bound is 512)\n", w, h,
                progressive ? "progressive" : "baseline", jpg.size(), double(w) * h / double(jpg.size()));
  }
}
