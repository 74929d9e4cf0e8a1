#include "image.h"

#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

// jpeglib.h needs <cstdio> first.
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "error.h"

// libjpeg and libpng report errors by calling a handler that must not return.
// We longjmp out of them. A longjmp skips destructors, so every function that
// calls setjmp below (jpeg_guarded, png_guarded) only runs lambdas that touch
// plain C state and buffers owned by the caller; the C++ objects (vectors, the
// RAII wrappers that destroy the codec state) live in the caller's frame, which
// the longjmp never leaves.

namespace vismem {

namespace {

// PIL refuses images above 2 * MAX_IMAGE_PIXELS (DecompressionBombError).
constexpr int64_t kMaxPixels = 2 * int64_t(1024 * 1024 * 1024 / 4 / 3);

void check_size(int64_t w, int64_t h, const std::string& name) {
  if (w <= 0 || h <= 0) throw Error(name + ": image has an invalid size " + std::to_string(w) + "x" + std::to_string(h));
  if (w * h > kMaxPixels)
    throw Error(name + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                ", more than the " + std::to_string(kMaxPixels) + " pixels vismem decodes (decompression bomb?)");
}

// What one decode may allocate, relative to the input's size. A header may
// claim any size; the pixels must be paid for by coded bytes, or a 600-byte
// file would cost a gigabyte (and decode to a blank image).
// - Huffman JPEG: every 8x8 block of the largest component costs at least one
//   bit in the first (or only) scan, so a file codes at most 512 pixels per
//   byte: a hard bound, no valid file is refused.
// - Arithmetic-coded JPEG and WebP can spend less than a bit per block, so
//   there is no such bound: up to kFreePixels (a 16 MP photo) always, beyond
//   that at most kPixelsPerByte pixels per byte of input.
// PNG has its own bound (deflate's 1032:1) in decode_png; BMP needs every
// pixel's bytes present before anything is allocated.
constexpr int64_t kJpegHuffmanPixelsPerByte = 512;
constexpr int64_t kFreePixels = int64_t(1) << 24;
constexpr int64_t kPixelsPerByte = 1024;

void check_budget(int64_t w, int64_t h, size_t bytes, int64_t px_per_byte, bool free_floor, const std::string& what,
                  const std::string& name) {
  const int64_t pixels = w * h;  // both already checked by check_size: no overflow
  const int64_t coded = px_per_byte * static_cast<int64_t>(std::min<size_t>(bytes, size_t(1) << 40));
  if (pixels <= coded || (free_floor && pixels <= kFreePixels)) return;
  throw Error(name + ": " + what + " header claims " + std::to_string(w) + "x" + std::to_string(h) + " pixels, more than " +
              std::to_string(bytes) + " bytes can code (corrupt, truncated or a decompression bomb)");
}

Image make_image(int64_t w, int64_t h) {
  Image img;
  img.width = int(w);
  img.height = int(h);
  img.rgb.resize(size_t(w) * size_t(h) * 3);
  return img;
}

// PIL's MULDIV255: (a * b + 127) / 255 computed with shifts, rounding as Pillow does.
inline int muldiv255(int a, int b) {
  int tmp = a * b + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

inline uint8_t clip8(int v) { return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// ---------------------------------------------------------------- JPEG

struct JpegErrorMgr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (e.g. "extraneous bytes before marker") are ignored, as PIL does.
void jpeg_silent(j_common_ptr) {}

// The whole file is in the buffer, so a request for more data means the file
// ended early. libjpeg's memory source would pad with a fake EOI and decode gray;
// PIL raises "image file is truncated": so do we.
void jpeg_src_noop(j_decompress_ptr) {}
boolean jpeg_src_fill(j_decompress_ptr cinfo) {
  ERREXIT(cinfo, JERR_INPUT_EOF);
  return FALSE;
}
void jpeg_src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  if (size_t(n) > cinfo->src->bytes_in_buffer) ERREXIT(cinfo, JERR_INPUT_EOF);
  cinfo->src->next_input_byte += n;
  cinfo->src->bytes_in_buffer -= size_t(n);
}

struct JpegDecoder {
  jpeg_decompress_struct cinfo{};
  JpegErrorMgr err{};
  jpeg_source_mgr src{};
  JpegDecoder() = default;
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  ~JpegDecoder() { jpeg_destroy_decompress(&cinfo); }  // safe on a zeroed or partly set up struct
};

template <class F>
bool jpeg_guarded(JpegDecoder& d, F&& f) {
  if (setjmp(d.err.jump)) return false;
  f();
  return true;
}

[[noreturn]] void jpeg_fail(const JpegDecoder& d, const std::string& name) {
  if (d.err.pub.msg_code == JERR_INPUT_EOF) throw Error(name + ": JPEG file is truncated (" + d.err.message + ")");
  throw Error(name + ": corrupt or unsupported JPEG (" + std::string(d.err.message) + ")");
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  JpegDecoder d;
  d.cinfo.err = jpeg_std_error(&d.err.pub);
  d.err.pub.error_exit = jpeg_on_error;
  d.err.pub.output_message = jpeg_silent;
  d.src.init_source = jpeg_src_noop;
  d.src.fill_input_buffer = jpeg_src_fill;
  d.src.skip_input_data = jpeg_src_skip;
  d.src.resync_to_restart = jpeg_resync_to_restart;
  d.src.term_source = jpeg_src_noop;
  d.src.next_input_byte = data;
  d.src.bytes_in_buffer = size;
  if (!jpeg_guarded(d, [&] {
        jpeg_create_decompress(&d.cinfo);
        d.cinfo.src = &d.src;
        jpeg_read_header(&d.cinfo, TRUE);
      }))
    jpeg_fail(d, name);

  const int comps = d.cinfo.num_components;
  if (comps != 1 && comps != 3 && comps != 4)
    throw Error(name + ": cannot handle a JPEG with " + std::to_string(comps) + " components");
  check_size(d.cinfo.image_width, d.cinfo.image_height, name);
  if (d.cinfo.arith_code)
    check_budget(d.cinfo.image_width, d.cinfo.image_height, size, kPixelsPerByte, true, "JPEG", name);
  else
    check_budget(d.cinfo.image_width, d.cinfo.image_height, size, kJpegHuffmanPixelsPerByte, false, "JPEG", name);
  // PIL's settings: rawmode L / RGB / CMYK;I, default (ISLOW) DCT, fancy upsampling,
  // and libjpeg's own guess of the stored color space (YCbCr, RGB, YCCK, CMYK).
  d.cinfo.out_color_space = comps == 1 ? JCS_GRAYSCALE : (comps == 3 ? JCS_RGB : JCS_CMYK);
  d.cinfo.dct_method = JDCT_ISLOW;
  d.cinfo.do_fancy_upsampling = TRUE;
  if (!jpeg_guarded(d, [&] { jpeg_start_decompress(&d.cinfo); })) jpeg_fail(d, name);
  if (int(d.cinfo.output_components) != comps)
    throw Error(name + ": unexpected JPEG output components " + std::to_string(d.cinfo.output_components));

  Image img = make_image(d.cinfo.output_width, d.cinfo.output_height);
  const size_t w = size_t(img.width);
  std::vector<uint8_t> row(comps == 3 ? 0 : w * size_t(comps));
  uint8_t* out = img.rgb.data();
  uint8_t* scratch = row.data();
  if (!jpeg_guarded(d, [&] {
        while (d.cinfo.output_scanline < d.cinfo.output_height) {
          uint8_t* dst = out + size_t(d.cinfo.output_scanline) * w * 3;
          JSAMPROW r = comps == 3 ? dst : scratch;
          if (jpeg_read_scanlines(&d.cinfo, &r, 1) != 1) ERREXIT(&d.cinfo, JERR_INPUT_EOF);
          if (comps == 1) {
            for (size_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = scratch[x];
          } else if (comps == 4) {
            // PIL reads 4-channel JPEGs as Adobe-inverted CMYK ("CMYK;I"), then cmyk2rgb.
            for (size_t x = 0; x < w; ++x) {
              const uint8_t* s = scratch + 4 * x;
              const int nk = s[3];  // 255 - (255 - raw k)
              for (int c = 0; c < 3; ++c) dst[3 * x + c] = clip8(nk - muldiv255(255 - s[c], nk));
            }
          }
        }
      }))
    jpeg_fail(d, name);
  // No jpeg_finish_decompress: all rows are in, and what follows the last scan
  // does not matter (PIL stops there too once every row is decoded).
  return img;
}

// ---------------------------------------------------------------- PNG

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = {};
  PngDecoder() = default;
  PngDecoder(const PngDecoder&) = delete;
  PngDecoder& operator=(const PngDecoder&) = delete;
  ~PngDecoder() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof d->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, size_t n) {
  auto* d = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (n > d->size - d->pos) png_error(png, "file is truncated");
  std::memcpy(out, d->data + d->pos, n);
  d->pos += n;
}

template <class F>
bool png_guarded(PngDecoder& d, F&& f) {
  if (setjmp(png_jmpbuf(d.png))) return false;
  f();
  return true;
}

[[noreturn]] void png_fail(const PngDecoder& d, const std::string& name) {
  if (std::strcmp(d.message, "file is truncated") == 0) throw Error(name + ": PNG file is truncated");
  throw Error(name + ": corrupt or unsupported PNG (" + std::string(d.message) + ")");
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name) {
  PngDecoder d;
  d.data = data;
  d.size = size;
  d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, png_on_error, png_on_warning);
  if (!d.png) throw Error(name + ": cannot create a PNG reader");
  d.info = png_create_info_struct(d.png);
  if (!d.info) throw Error(name + ": cannot create a PNG reader");

  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  size_t rowbytes = 0;
  if (!png_guarded(d, [&] {
        png_set_read_fn(d.png, &d, png_read_memory);
        png_read_info(d.png, d.info);
        png_get_IHDR(d.png, d.info, &w, &h, &depth, &color, &interlace, nullptr, nullptr);
      }))
    png_fail(d, name);
  check_size(w, h, name);
  // Deflate expands at most about 1032:1, so pixel data too large for this file
  // means a corrupt or truncated file; refuse it before allocating the pixels.
  const uint64_t packed = (uint64_t(w) * png_get_channels(d.png, d.info) * uint64_t(depth) + 7) / 8 * h;
  if (packed > 1100 * uint64_t(size) + 65536) throw Error(name + ": PNG file is truncated or corrupt (" +
                                                          std::to_string(w) + "x" + std::to_string(h) +
                                                          " pixels cannot fit in " + std::to_string(size) + " bytes)");
  // Raw samples only (no libpng expansion), so every conversion below is PIL's.
  if (!png_guarded(d, [&] {
        if (depth < 8) png_set_packing(d.png);  // one byte per sample, values unscaled
        png_set_interlace_handling(d.png);
        png_read_update_info(d.png, d.info);
        rowbytes = png_get_rowbytes(d.png, d.info);
      }))
    png_fail(d, name);

  std::vector<uint8_t> raw(rowbytes * h);
  std::vector<png_bytep> rows(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = raw.data() + size_t(y) * rowbytes;
  if (!png_guarded(d, [&] { png_read_image(d.png, rows.data()); })) png_fail(d, name);
  // No png_read_end: PIL too ignores damage after the image data (missing IEND, trailing chunks).

  // Pillow's palette starts all black; PLTE fills the first entries.
  uint8_t palette[256][3] = {};
  if (color == PNG_COLOR_TYPE_PALETTE) {
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(d.png, d.info, &plte, &n) != PNG_INFO_PLTE || n <= 0)
      throw Error(name + ": corrupt PNG (palette image without a palette)");
    for (int i = 0; i < std::min(n, 256); ++i) {
      palette[i][0] = plte[i].red;
      palette[i][1] = plte[i].green;
      palette[i][2] = plte[i].blue;
    }
  }

  Image img = make_image(w, h);
  const int channels = png_get_channels(d.png, d.info);
  const bool wide = depth == 16;
  for (size_t y = 0; y < h; ++y) {
    const uint8_t* s = raw.data() + y * rowbytes;
    uint8_t* o = img.rgb.data() + y * size_t(w) * 3;
    for (size_t x = 0; x < w; ++x, o += 3) {
      const uint8_t* p = s + x * size_t(channels) * (wide ? 2 : 1);
      switch (color) {
        case PNG_COLOR_TYPE_GRAY: {
          uint8_t v;
          if (depth == 16) v = p[0];  // the high byte, as for 16-bit RGB (PIL saturates here: see image.h)
          else if (depth == 8) v = p[0];
          else v = uint8_t(p[0] * (255 / ((1 << depth) - 1)));  // bit replication, as PIL's L;2 / L;4 / 1
          o[0] = o[1] = o[2] = v;
          break;
        }
        case PNG_COLOR_TYPE_GRAY_ALPHA:
          o[0] = o[1] = o[2] = p[0];  // 16-bit: high byte (big-endian first)
          break;
        case PNG_COLOR_TYPE_PALETTE:
          std::memcpy(o, palette[p[0]], 3);
          break;
        default:  // RGB, RGBA: high byte of each 16-bit sample
          if (wide) {
            o[0] = p[0];
            o[1] = p[2];
            o[2] = p[4];
          } else {
            std::memcpy(o, p, 3);
          }
      }
    }
  }
  return img;
}

// ---------------------------------------------------------------- WebP

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "file is truncated";
    default: return "error";
  }
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name) {
  WebPBitstreamFeatures f;
  VP8StatusCode st = WebPGetFeatures(data, size, &f);
  if (st != VP8_STATUS_OK) throw Error(name + ": corrupt or unsupported WebP (" + webp_status(st) + ")");
  if (f.has_animation) throw Error(name + ": animated WebP is not supported");
  check_size(f.width, f.height, name);
  check_budget(f.width, f.height, size, kPixelsPerByte, true, "WebP", name);
  Image img = make_image(f.width, f.height);
  WebPDecoderConfig cfg;
  if (!WebPInitDecoderConfig(&cfg)) throw Error(name + ": libwebp version mismatch");
  // Alpha is dropped, not composited (PIL's RGBA -> RGB); fancy upsampling is libwebp's default, as in PIL.
  cfg.output.colorspace = MODE_RGB;
  cfg.output.is_external_memory = 1;
  cfg.output.u.RGBA.rgba = img.rgb.data();
  cfg.output.u.RGBA.stride = img.width * 3;
  cfg.output.u.RGBA.size = img.rgb.size();
  st = WebPDecode(data, size, &cfg);
  WebPFreeDecBuffer(&cfg.output);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) throw Error(name + ": WebP file is truncated");
  if (st != VP8_STATUS_OK) throw Error(name + ": corrupt or unsupported WebP (" + webp_status(st) + ")");
  return img;
}

// ---------------------------------------------------------------- BMP

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

// Byte position (0..3) selected by a mask of the form 0xFF << 8k, or -1.
int byte_of_mask(uint32_t m) {
  for (int k = 0; k < 4; ++k)
    if (m == 0xFFu << (8 * k)) return k;
  return -1;
}

Image decode_bmp(const uint8_t* p, size_t n, const std::string& name) {
  auto need = [&](uint64_t off, uint64_t len) {
    if (off > n || len > n - off) throw Error(name + ": BMP file is truncated");
  };
  auto bad = [&](const std::string& what) { return Error(name + ": unsupported or corrupt BMP (" + what + ")"); };
  need(0, 18);
  const uint32_t data_offset = le32(p + 10);
  const uint32_t hsize = le32(p + 14);
  need(14, hsize);
  int64_t w = 0, h = 0;
  int bpp = 0;
  uint32_t compression = 0, colors_used = 0;
  int entry = 4;  // palette entry bytes (BGRX; BGR for the OS/2 core header)
  if (hsize == 12) {
    w = le16(p + 18);
    h = le16(p + 20);
    bpp = le16(p + 24);
    entry = 3;
  } else if (hsize >= 40) {
    w = int32_t(le32(p + 18));
    h = int32_t(le32(p + 22));
    bpp = le16(p + 28);
    compression = le32(p + 30);
    colors_used = le32(p + 46);
  } else {
    throw bad("header size " + std::to_string(hsize));
  }
  const bool top_down = h < 0;
  if (top_down) h = -h;
  check_size(w, h, name);

  // Channel byte positions in a pixel for 24/32-bit: BGR(X) unless bitfields say otherwise.
  int pos_r = 2, pos_g = 1, pos_b = 0;
  uint64_t palette_off = 14 + uint64_t(hsize);
  if (compression == 3 || compression == 6) {  // BI_BITFIELDS, BI_ALPHABITFIELDS
    if (bpp != 24 && bpp != 32) throw bad(std::to_string(bpp) + "-bit bitfields");
    need(54, 12);  // after a 40-byte header or inside a larger one: the same offset
    const uint32_t rm = le32(p + 54), gm = le32(p + 58), bm = le32(p + 62);
    if (hsize == 40) palette_off += compression == 6 ? 16 : 12;
    if (rm != 0 || gm != 0 || bm != 0) {
      pos_r = byte_of_mask(rm);
      pos_g = byte_of_mask(gm);
      pos_b = byte_of_mask(bm);
      if (pos_r < 0 || pos_g < 0 || pos_b < 0 || pos_r >= bpp / 8 || pos_g >= bpp / 8 || pos_b >= bpp / 8)
        throw bad("channel masks are not whole bytes");
    }
  } else if (compression != 0) {
    throw bad(compression == 1 || compression == 2 ? "RLE compression" : "compression " + std::to_string(compression));
  }
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 24 && bpp != 32) throw bad(std::to_string(bpp) + " bits per pixel");

  uint8_t palette[256][3] = {};  // entries past the file's palette are black, as in Pillow
  if (bpp <= 8) {
    const uint64_t colors = colors_used ? colors_used : (1u << bpp);
    if (colors > 256) throw bad(std::to_string(colors) + " palette colors");
    need(palette_off, colors * entry);
    for (uint64_t i = 0; i < colors; ++i) {
      const uint8_t* e = p + palette_off + i * entry;
      palette[i][0] = e[2];
      palette[i][1] = e[1];
      palette[i][2] = e[0];
    }
  }

  const uint64_t stride = (uint64_t(w) * bpp + 31) / 32 * 4;
  need(data_offset, stride * uint64_t(h));
  Image img = make_image(w, h);
  const int step = bpp / 8;
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* s = p + data_offset + stride * uint64_t(top_down ? y : h - 1 - y);
    uint8_t* o = img.rgb.data() + size_t(y) * size_t(w) * 3;
    for (int64_t x = 0; x < w; ++x, o += 3) {
      if (bpp <= 8) {
        const int per_byte = 8 / bpp;
        const int shift = 8 - bpp * int(x % per_byte + 1);
        const int index = (s[x / per_byte] >> shift) & ((1 << bpp) - 1);
        std::memcpy(o, palette[index], 3);
      } else {
        const uint8_t* px = s + x * step;
        o[0] = px[pos_r];
        o[1] = px[pos_g];
        o[2] = px[pos_b];
      }
    }
  }
  return img;
}

}  // namespace

std::string detect_image_format(const uint8_t* b, size_t n) {
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return "jpeg";
  if (n >= 8 && std::memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return "png";
  if (n >= 12 && std::memcmp(b, "RIFF", 4) == 0 && std::memcmp(b + 8, "WEBP", 4) == 0) return "webp";
  if (n >= 2 && b[0] == 'B' && b[1] == 'M') return "bmp";
  return "";
}

Image decode_image(const uint8_t* bytes, size_t size, const std::string& name) {
  if (bytes == nullptr || size == 0) throw Error(name + ": empty file");
  const std::string fmt = detect_image_format(bytes, size);
  if (fmt == "jpeg") return decode_jpeg(bytes, size, name);
  if (fmt == "png") return decode_png(bytes, size, name);
  if (fmt == "webp") return decode_webp(bytes, size, name);
  if (fmt == "bmp") return decode_bmp(bytes, size, name);
  throw Error(name + ": not a JPEG, PNG, WebP or BMP file (unrecognized leading bytes)");
}

Image decode_image_file(const std::string& path) {
  // A directory opens as a stream on Linux and reports a nonsense size: check first.
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) throw Error(path + ": cannot open image file (no such file)");
  if (!std::filesystem::is_regular_file(st)) throw Error(path + ": not a regular file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open image file");
  const std::streamoff n = f.tellg();
  if (n < 0) throw Error(path + ": cannot read image file");
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), n)) throw Error(path + ": cannot read image file");
  return decode_image(bytes.data(), bytes.size(), path);
}

namespace {

struct JpegEncoder {
  jpeg_compress_struct cinfo{};
  JpegErrorMgr err{};
  unsigned char* out = nullptr;  // malloc'ed by jpeg_mem_dest, grown as it writes
  unsigned long out_size = 0;
  JpegEncoder() = default;
  JpegEncoder(const JpegEncoder&) = delete;
  JpegEncoder& operator=(const JpegEncoder&) = delete;
  ~JpegEncoder() {
    jpeg_destroy_compress(&cinfo);
    std::free(out);
  }
};

template <class F>
bool jpeg_guarded(JpegEncoder& e, F&& f) {
  if (setjmp(e.err.jump)) return false;
  f();
  return true;
}

}  // namespace

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  if (img.width <= 0 || img.height <= 0) throw Error("encode_jpeg: empty image");
  if (img.rgb.size() != size_t(img.width) * size_t(img.height) * 3)
    throw Error("encode_jpeg: pixel buffer does not match " + std::to_string(img.width) + "x" + std::to_string(img.height));
  if (quality < 1 || quality > 100) throw Error("encode_jpeg: quality must be 1..100, got " + std::to_string(quality));
  JpegEncoder e;
  e.cinfo.err = jpeg_std_error(&e.err.pub);
  e.err.pub.error_exit = jpeg_on_error;
  e.err.pub.output_message = jpeg_silent;
  if (!jpeg_guarded(e, [&] {
        jpeg_create_compress(&e.cinfo);
        jpeg_mem_dest(&e.cinfo, &e.out, &e.out_size);
        e.cinfo.image_width = JDIMENSION(img.width);
        e.cinfo.image_height = JDIMENSION(img.height);
        e.cinfo.input_components = 3;
        e.cinfo.in_color_space = JCS_RGB;
        jpeg_set_defaults(&e.cinfo);
        jpeg_set_quality(&e.cinfo, quality, TRUE);
        jpeg_start_compress(&e.cinfo, TRUE);
        const size_t stride = size_t(img.width) * 3;
        while (e.cinfo.next_scanline < e.cinfo.image_height) {
          // libjpeg's API takes non-const rows but only reads them.
          JSAMPROW row = const_cast<JSAMPROW>(img.rgb.data() + e.cinfo.next_scanline * stride);
          jpeg_write_scanlines(&e.cinfo, &row, 1);
        }
        jpeg_finish_compress(&e.cinfo);
      }))
    throw Error("encode_jpeg: " + std::string(e.err.message));
  return std::vector<uint8_t>(e.out, e.out + e.out_size);
}

bool is_image_path(const std::string& path) {
  const auto dot = path.find_last_of('.');
  const auto slash = path.find_last_of("/\\");
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot + 1);
  for (auto& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp" || ext == "bmp";
}

}  // namespace vismem
