// Bit-exactness with Pillow depends on the double arithmetic of the filter
// coefficients being evaluated as written: no fused multiply-add (which
// -march=native would otherwise allow), as in Pillow's baseline x86-64 build.
#pragma GCC optimize("fp-contract=off")

#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif

#include "error.h"
#include "image.h"

namespace vismem {

namespace {

// Pillow's fixed point: 8 bits of result, 2 spare bits for the filter's overshoot.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output position in [lo, hi): the first input index, the tap count, and
// ksize fixed-point weights, indexed from lo. Pillow's precompute_coeffs +
// normalize_coeffs_8bpc, for the positions a crop keeps.
struct Coeffs {
  int ksize = 0;
  int lo = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> k;  // (hi - lo) * ksize
  int first_at(int xx) const { return first[size_t(xx - lo)]; }
  int count_at(int xx) const { return count[size_t(xx - lo)]; }
  const int32_t* k_at(int xx) const { return &k[size_t(xx - lo) * ksize]; }
};

Coeffs precompute_coeffs(int in_size, int out_size, int lo, int hi) {
  const float in0 = 0.0f, in1 = float(in_size);  // Pillow's box is float
  const double scale = double(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;  // bicubic support is 2
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.lo = lo;
  c.first.resize(size_t(hi - lo));
  c.count.resize(size_t(hi - lo));
  c.k.assign(size_t(hi - lo) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = lo; xx < hi; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    if (xmax > c.ksize) xmax = c.ksize;  // cannot happen; keeps the writes in bounds regardless
    for (int x = 0; x < xmax; ++x) {
      const double v = bicubic_filter((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    int32_t* k = &c.k[size_t(xx - lo) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = w[x];
      if (ww != 0.0) v /= ww;
      k[x] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[size_t(xx - lo)] = xmin;
    c.count[size_t(xx - lo)] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t ss) {
  const int32_t v = ss >> kPrecisionBits;
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output pixel of the horizontal pass: the 3 channels of count input
// pixels from s weighted by k. s must be readable one byte past the last pixel.
inline void horizontal_pixel(const uint8_t* s, const int32_t* k, int count, uint8_t* out) {
#if defined(__SSE4_1__)
  // The channels as 4 int32 lanes (the 4th is the next pixel's red, ignored):
  // the same integer sums as the scalar code, one multiply per tap instead of three.
  __m128i acc = _mm_set1_epi32(1 << (kPrecisionBits - 1));
  for (int t = 0; t < count; ++t) {
    int32_t v;
    std::memcpy(&v, s + 3 * t, 4);
    const __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
    acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[t])));
  }
  acc = _mm_srai_epi32(acc, kPrecisionBits);
  // Saturating packs clip to [0, 255] as clip8 does.
  const int32_t packed = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(acc, acc), acc));
  std::memcpy(out, &packed, 3);
#else
  int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
  for (int t = 0; t < count; ++t) {
    s0 += s[3 * t + 0] * k[t];
    s1 += s[3 * t + 1] * k[t];
    s2 += s[3 * t + 2] * k[t];
  }
  out[0] = clip8(s0);
  out[1] = clip8(s1);
  out[2] = clip8(s2);
#endif
}

// The crop window of the resized image: out[y][x] = resized[y0 + y][x0 + x],
// zero where that falls outside the resized image (torchvision/HF pad with 0).
// Pillow's ImagingResampleInner restricted to the window: a horizontal pass over
// the input rows the vertical pass needs, then the vertical pass; a pass is
// skipped when its size is unchanged; no pass at all is a copy.
Image resample_window(const Image& in, int new_w, int new_h, int x0, int y0, int out_w, int out_h) {
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.rgb.assign(size_t(out_w) * out_h * 3, 0);
  // Output columns/rows that land inside the resized image.
  const int cx0 = std::max(0, -x0), cx1 = std::min(out_w, new_w - x0);
  const int cy0 = std::max(0, -y0), cy1 = std::min(out_h, new_h - y0);
  if (cx0 >= cx1 || cy0 >= cy1) return out;
  const int ncols = cx1 - cx0;
  const bool need_h = new_w != in.width;
  const bool need_v = new_h != in.height;

  Coeffs vc;
  int row_lo, row_hi;  // input rows used
  if (need_v) {
    vc = precompute_coeffs(in.height, new_h, y0 + cy0, y0 + cy1);
    row_lo = in.height;
    row_hi = 0;
    for (int y = y0 + cy0; y < y0 + cy1; ++y) {
      row_lo = std::min(row_lo, vc.first_at(y));
      row_hi = std::max(row_hi, vc.first_at(y) + vc.count_at(y));
    }
    if (row_lo >= row_hi) row_lo = row_hi = 0;
  } else {
    row_lo = y0 + cy0;
    row_hi = y0 + cy1;
  }

  // Horizontal pass into tmp: rows [row_lo, row_hi), columns x0+cx0 .. x0+cx1 of
  // the resized width. Without one, the vertical pass reads the input directly.
  const size_t tstride = size_t(ncols) * 3;
  std::vector<uint8_t> tmp;
  const uint8_t* vsrc = in.rgb.data() + size_t(x0 + cx0) * 3;  // row 0 of what the vertical pass reads
  size_t vstride = size_t(in.width) * 3;
  int vrow0 = 0;
  if (need_h) {
    const Coeffs hc = precompute_coeffs(in.width, new_w, x0 + cx0, x0 + cx1);
    tmp.resize(size_t(row_hi - row_lo) * tstride);
    // horizontal_pixel reads one byte past a pixel: the image's last row goes through a padded copy.
    std::vector<uint8_t> last_row;
    for (int y = row_lo; y < row_hi; ++y) {
      const uint8_t* src = in.rgb.data() + size_t(y) * in.width * 3;
      if (y == in.height - 1) {
        last_row.assign(src, src + size_t(in.width) * 3);
        last_row.push_back(0);
        src = last_row.data();
      }
      uint8_t* dst = tmp.data() + size_t(y - row_lo) * tstride;
      for (int xx = 0; xx < ncols; ++xx) {
        const int ox = x0 + cx0 + xx;
        horizontal_pixel(src + size_t(hc.first_at(ox)) * 3, hc.k_at(ox), hc.count_at(ox), dst + 3 * xx);
      }
    }
    vsrc = tmp.data();
    vstride = tstride;
    vrow0 = row_lo;
  }

  // Vertical pass (or a copy) into the window.
  std::vector<int32_t> acc(tstride);
  for (int y = cy0; y < cy1; ++y) {
    uint8_t* dst = out.rgb.data() + (size_t(y) * out_w + cx0) * 3;
    if (!need_v) {
      std::memcpy(dst, vsrc + size_t(y0 + y - vrow0) * vstride, tstride);
      continue;
    }
    const int oy = y0 + y;
    const int32_t* k = vc.k_at(oy);
    std::fill(acc.begin(), acc.end(), int32_t(1) << (kPrecisionBits - 1));
    for (int t = 0, n = vc.count_at(oy); t < n; ++t) {
      const uint8_t* s = vsrc + size_t(vc.first_at(oy) + t - vrow0) * vstride;
      const int32_t kt = k[t];
      for (size_t i = 0; i < tstride; ++i) acc[i] += s[i] * kt;
    }
    for (size_t i = 0; i < tstride; ++i) dst[i] = clip8(acc[i]);
  }
  return out;
}

// Python's int(round(v / 2.0)) for an integer v: round half to even.
int half_round_even(int v) {
  const int f = v >= 0 ? v / 2 : -((-v + 1) / 2);  // floor(v / 2)
  if (v % 2 == 0) return f;
  return (f % 2 == 0) ? f : f + 1;
}

// Offset of the crop window in a side of length size.
int crop_offset(int size, int crop, PreprocessConfig::Rounding r) {
  const int d = size - crop;
  if (r == PreprocessConfig::Rounding::hf) return d >= 0 ? d / 2 : -((-d + 1) / 2);  // floor(d / 2)
  if (d < 0) return -((-d) / 2);  // torchvision pads (crop - size) // 2 before
  return half_round_even(d);
}

void check_image(const Image& img, const char* what) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != size_t(img.width) * img.height * 3)
    throw Error(std::string(what) + ": image is empty or its pixel buffer does not match " +
                std::to_string(img.width) + "x" + std::to_string(img.height) + "x3");
}

std::string fmt_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(v));
  return buf;
}

}  // namespace

PreprocessConfig PreprocessConfig::mobilenet() {
  PreprocessConfig c;
  c.resize_shorter = 224;
  c.crop = 224;
  c.rounding = Rounding::torchvision;
  c.scale = 1.0f;
  for (int i = 0; i < 3; ++i) {
    c.mean[i] = 128.0f;
    c.std[i] = 128.0f;
  }
  return c;
}

PreprocessConfig PreprocessConfig::dinov2() {
  PreprocessConfig c;
  c.resize_shorter = 256;
  c.crop = 224;
  c.rounding = Rounding::torchvision;
  c.scale = 1.0f / 255.0f;
  const float m[3] = {0.485f, 0.456f, 0.406f}, s[3] = {0.229f, 0.224f, 0.225f};
  for (int i = 0; i < 3; ++i) {
    c.mean[i] = m[i];
    c.std[i] = s[i];
  }
  return c;
}

PreprocessConfig PreprocessConfig::clip() {
  PreprocessConfig c;
  c.resize_shorter = 224;
  c.crop = 224;
  c.rounding = Rounding::hf;
  c.scale = 1.0f / 255.0f;
  const float m[3] = {0.48145466f, 0.4578275f, 0.40821073f}, s[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  for (int i = 0; i < 3; ++i) {
    c.mean[i] = m[i];
    c.std[i] = s[i];
  }
  return c;
}

std::string PreprocessConfig::describe() const {
  std::string s = "resize=" + std::to_string(resize_shorter) + ",crop=" + std::to_string(crop) +
                  ",interp=pil_bicubic_aa,rounding=" + (rounding == Rounding::hf ? "hf" : "torchvision") +
                  ",scale=" + fmt_float(scale) + ",mean=";
  for (int i = 0; i < 3; ++i) {
    if (i) s += '/';
    s += fmt_float(mean[i]);
  }
  s += ",std=";
  for (int i = 0; i < 3; ++i) {
    if (i) s += '/';
    s += fmt_float(std[i]);
  }
  return s;
}

std::pair<int, int> resized_size(int width, int height, const PreprocessConfig& pc) {
  if (width <= 0 || height <= 0) throw Error("resize: invalid image size " + std::to_string(width) + "x" + std::to_string(height));
  if (pc.resize_shorter <= 0) throw Error("resize: resize_shorter must be positive, got " + std::to_string(pc.resize_shorter));
  const int short_side = std::min(width, height), long_side = std::max(width, height);
  // int(requested_new_short * long / short): an exact integer product, one double division, truncation.
  const double q = double(int64_t(pc.resize_shorter) * long_side) / double(short_side);
  if (q > 1e8) throw Error("resize: a " + std::to_string(width) + "x" + std::to_string(height) + " image resized to shorter side " +
                           std::to_string(pc.resize_shorter) + " is too large");
  const int new_long = int(q);
  if (width <= height) return {pc.resize_shorter, new_long};
  return {new_long, pc.resize_shorter};
}

Image resize_bicubic(const Image& img, int width, int height) {
  check_image(img, "resize");
  if (width <= 0 || height <= 0) throw Error("resize: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
  return resample_window(img, width, height, 0, 0, width, height);
}

Image resize_and_crop(const Image& img, const PreprocessConfig& pc) {
  check_image(img, "preprocess");
  if (pc.crop <= 0) throw Error("preprocess: crop must be positive, got " + std::to_string(pc.crop));
  const auto [new_w, new_h] = resized_size(img.width, img.height, pc);
  const int x0 = crop_offset(new_w, pc.crop, pc.rounding);
  const int y0 = crop_offset(new_h, pc.crop, pc.rounding);
  return resample_window(img, new_w, new_h, x0, y0, pc.crop, pc.crop);
}

void normalize_to_chw(const Image& cropped, const PreprocessConfig& pc, float* out) {
  check_image(cropped, "normalize");
  if (cropped.width != pc.crop || cropped.height != pc.crop)
    throw Error("normalize: image is " + std::to_string(cropped.width) + "x" + std::to_string(cropped.height) +
                ", the preprocessing expects " + std::to_string(pc.crop) + "x" + std::to_string(pc.crop));
  // A table per channel, each entry computed in float32 in torchvision's order:
  // ToTensor's x / 255 (when scale is the reciprocal of an integer), then Normalize's (x - mean) / std.
  const double inv = 1.0 / double(pc.scale);
  const bool divide = pc.scale != 1.0f && std::fabs(inv - std::round(inv)) < 1e-3 * inv;
  const float divisor = float(std::round(inv));
  float lut[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      const float x = divide ? float(v) / divisor : float(v) * pc.scale;
      lut[c][v] = (x - pc.mean[c]) / pc.std[c];
    }
  const size_t plane = size_t(pc.crop) * pc.crop;
  const uint8_t* s = cropped.rgb.data();
  for (size_t i = 0; i < plane; ++i) {
    out[i] = lut[0][s[3 * i + 0]];
    out[plane + i] = lut[1][s[3 * i + 1]];
    out[2 * plane + i] = lut[2][s[3 * i + 2]];
  }
}

void preprocess(const Image& img, const PreprocessConfig& pc, float* out) {
  normalize_to_chw(resize_and_crop(img, pc), pc, out);
}

}  // namespace vismem
