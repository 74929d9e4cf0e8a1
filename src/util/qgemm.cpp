#include "qgemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "cpu.h"
#include "error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vismem {

namespace {

constexpr int64_t kBlock = 8;    // output columns per packed block (one vector of int32)
constexpr int64_t kRowTile = 32;  // rows of A kept hot while every column panel passes

// Weights: symmetric 8-bit per output channel, q = round(w / s), s = max|w| / 127.
// Activations: 8 bits (0..255) where the weights allow it, else 7 bits (0..127,
// at most 128 after rounding the zero point). vpmaddubsw adds the products of
// adjacent k pairs into int16, which saturates past 2^15 - 1: with 8-bit
// activations a pair is safe when |q[2i]| + |q[2i+1]| <= 128 (255 * 128 =
// 32640); with 7-bit ones every pair is (2 * 128 * 127 = 32512). The few pairs
// over 128 move their excess to extension slots past k (wide_plan below), so a
// matrix with few of them still gets 8-bit activations, exactly.
// What the bits are worth (64 Imagenette images through MobileNet V1, mean
// cosine to the float32 embeddings): 7-bit weights with 8-bit activations
// (oneDNN's split on CPUs without VNNI) 0.9935; 8-bit weights on their own
// per-channel grid with 7-bit activations 0.9979 (10- or 12-bit activations:
// 0.9983); the uint8 file's weights kept exactly (quantize_rows' grid) with
// 7-bit activations 0.99973. On another 64 (every 23rd val image): 7-bit
// activations 0.99969, 8-bit 0.99992 (1 - cosine 3.1e-4 -> 8.5e-5).
constexpr float kWeightLevels = 127.0f;
constexpr int32_t kPairLimit = 128;  // the largest |q[2i]| + |q[2i+1]| that 8-bit activations allow

// One row; returns its scale. grid > 0: the row came from integer codes times
// grid (a uint8 model's dequantized weights); when they fit in [-127, 127]
// they are kept exactly, with scale = grid.
float quantize_weight_row(const float* x, int64_t k, int64_t kp, float grid, int8_t* q) {
  float mx = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    if (!std::isfinite(x[i])) throw Error("quantize_rows: a weight is NaN or infinite (column " + std::to_string(i) + ")");
    mx = std::max(mx, std::fabs(x[i]));
  }
  // A row below 127 * FLT_MIN (~1.5e-36) is zero here: its scale would be
  // subnormal and 1 / scale infinite.
  if (mx < kWeightLevels * std::numeric_limits<float>::min()) mx = 0.0f;
  float scale = mx / kWeightLevels;
  if (grid > 0.0f && mx / grid <= kWeightLevels + 0.01f) {
    bool on_grid = true;
    for (int64_t i = 0; i < k && on_grid; ++i) on_grid = std::fabs(x[i] / grid - std::nearbyint(x[i] / grid)) < 1e-3f;
    if (on_grid) scale = grid;
  }
  const float inv = mx > 0.0f ? 1.0f / scale : 0.0f;
  for (int64_t i = 0; i < k; ++i) q[i] = mx > 0.0f ? static_cast<int8_t>(std::lrintf(x[i] * inv)) : int8_t(0);
  std::fill(q + k, q + kp, int8_t(0));
  return mx > 0.0f ? scale : 0.0f;
}

// Whether W (codes [n, k]) can take 8-bit activations; if so, moves each pair's
// excess over kPairLimit into extension slots (codes changed in place, ext
// [n, ext_src.size()] filled) so that every pair, the extension's too, is within
// the limit. The excess goes from the larger |q| of the pair to a slot that
// copies the same activation column, so the sum over k is unchanged, exactly.
// A uint8 model's weights have a few such pairs per layer (MobileNet V1: 0 to 5
// channels of 64 to 1024); weights quantized on their own grid (a ViT's) have
// many, and keep 7-bit activations rather than grow k by more than 1/8.
bool wide_plan(std::vector<int8_t>& codes, int64_t n, int64_t k, std::vector<int32_t>& ext_src,
               std::vector<int8_t>& ext) {
  struct Move {
    int64_t row, col;
    int32_t excess;  // signed: what leaves codes[row, col] for the extension
  };
  std::vector<Move> moves;
  for (int64_t j = 0; j < n; ++j) {
    const int8_t* r = &codes[size_t(j * k)];
    for (int64_t i = 0; i + 1 < k; i += 2) {
      const int32_t a = r[i], b = r[i + 1], over = std::abs(a) + std::abs(b) - kPairLimit;
      if (over <= 0) continue;
      const int64_t col = std::abs(a) >= std::abs(b) ? i : i + 1;
      moves.push_back({j, col, r[col] > 0 ? over : -over});
    }
  }
  std::vector<int32_t> src;
  for (const Move& mv : moves) src.push_back(int32_t(mv.col));
  std::sort(src.begin(), src.end());
  src.erase(std::unique(src.begin(), src.end()), src.end());
  if (int64_t(src.size()) > std::max<int64_t>(8, k / 8)) return false;
  const int64_t ne = int64_t(src.size());
  std::vector<int8_t> e(size_t(n * ne), 0);
  for (const Move& mv : moves) {
    const int64_t t = std::lower_bound(src.begin(), src.end(), int32_t(mv.col)) - src.begin();
    e[size_t(mv.row * ne + t)] = int8_t(mv.excess);
  }
  // The extension starts at an even k, so its pairs are its own slots (2u, 2u + 1).
  for (int64_t j = 0; j < n; ++j)
    for (int64_t t = 0; t + 1 < ne; t += 2)
      if (std::abs(int32_t(e[size_t(j * ne + t)])) + std::abs(int32_t(e[size_t(j * ne + t + 1)])) > kPairLimit)
        return false;
  for (const Move& mv : moves) codes[size_t(mv.row * k + mv.col)] = int8_t(codes[size_t(mv.row * k + mv.col)] - mv.excess);
  ext_src = std::move(src);
  ext = std::move(e);
  return true;
}

// Activations of one call: asymmetric per row (w.act_levels steps) over [min(x, 0), max(x, 0)]
// (so 0 is exact): x ~= scale * (u - zero). Asymmetric because the inputs of
// fc2 are GELU outputs, nearly all of their range on one side of zero.
struct QuantizedRows {
  std::vector<uint8_t> u;      // [m, kp], padding = zero (contributes zero - zero = 0)
  std::vector<float> scale;    // [m]
  std::vector<int32_t> zero;   // [m]
};

// One row to u8 codes: u = clamp(round(x * inv) + z, 0, 255) (ties to even; at most 128 here).
void quantize_row_u8(const float* x, int64_t k, float inv, int32_t z, uint8_t* u) {
  for (int64_t j = 0; j < k; ++j)
    u[j] = static_cast<uint8_t>(std::clamp<int32_t>(static_cast<int32_t>(std::nearbyint(x[j] * inv)) + z, 0, 255));
}

// [lo, hi] of the row; finite = false where a value is NaN or infinite.
void row_range(const float* x, int64_t k, float& lo, float& hi, bool& finite) {
  for (int64_t j = 0; j < k; ++j) {
    lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
    finite = finite && std::isfinite(x[j]);
  }
}

#if defined(__x86_64__)
// The same two loops with AVX2 (scalar they cost as much as the int8 GEMM).
__attribute__((target("avx2,fma"))) void row_range_avx2(const float* x, int64_t k, float& lo, float& hi,
                                                        bool& finite) {
  __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi), bad = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    l = _mm256_min_ps(l, v);
    h = _mm256_max_ps(h, v);
    bad = _mm256_or_ps(bad, _mm256_sub_ps(v, v));  // v - v: 0 when finite, NaN otherwise
  }
  float lv[8], hv[8];
  _mm256_storeu_ps(lv, l);
  _mm256_storeu_ps(hv, h);
  for (int i = 0; i < 8; ++i) lo = std::min(lo, lv[i]), hi = std::max(hi, hv[i]);
  finite = finite && _mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) == 0;
  row_range(x + j, k - j, lo, hi, finite);
}

// 8 floats to int32 round(x * inv) + z (_mm256_cvtps_epi32 rounds to nearest even, as nearbyint).
__attribute__((target("avx2,fma"))) inline __m256i quantize8(const float* p, __m256 inv, __m256i z) {
  return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), inv)), z);
}

__attribute__((target("avx2,fma"))) void quantize_row_u8_avx2(const float* x, int64_t k, float inv, int32_t z,
                                                              uint8_t* u) {
  const __m256 vi = _mm256_set1_ps(inv);
  const __m256i vz = _mm256_set1_epi32(z), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t j = 0;
  for (; j + 32 <= k; j += 32) {
    // packs / packus saturate to [0, 255], the clamp; they interleave 128-bit lanes, the permute undoes it.
    const __m256i ab = _mm256_packs_epi32(quantize8(x + j, vi, vz), quantize8(x + j + 8, vi, vz));
    const __m256i cd = _mm256_packs_epi32(quantize8(x + j + 16, vi, vz), quantize8(x + j + 24, vi, vz));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + j), bytes);
  }
  quantize_row_u8(x + j, k - j, inv, z, u + j);
}
#endif

// A [m, k] quantized per row to w.act_levels levels, in w's k layout: [0, k) the
// row, then padding (the zero point: its weights are 0), then the extension
// slots, copies of the columns w.ext_src.
QuantizedRows quantize_activations(int64_t m, const float* a, int64_t lda, const QuantizedMatrix& w) {
  const int64_t k = w.k, kp = w.kp, ext0 = w.kp_main();
  const float levels = float(w.act_levels);
  QuantizedRows r;
  r.u.resize(size_t(m * kp));
  r.scale.resize(size_t(m));
  r.zero.resize(size_t(m));
#if defined(__x86_64__)
  const bool avx2 = cpu_isa() >= Isa::avx2;
#else
  const bool avx2 = false;
#endif
  for (int64_t i = 0; i < m; ++i) {
    const float* x = a + i * lda;
    float lo = 0.0f, hi = 0.0f;
    bool finite = true;
    uint8_t* u = &r.u[i * kp];
#if defined(__x86_64__)
    if (avx2) row_range_avx2(x, k, lo, hi, finite);
#endif
    if (!avx2) row_range(x, k, lo, hi, finite);
    const float range = hi - lo;
    float s = 0.0f, inv = 0.0f;
    int32_t z = 0;
    if (!finite) {
      s = std::numeric_limits<float>::quiet_NaN();  // the row's outputs are NaN, as a float product's
    } else if (std::isinf(range)) {  // finite values past FLT_MAX / 2: the range in double
      const double wide = double(hi) - double(lo);
      s = float(wide / levels);
      inv = float(levels / wide);
      z = static_cast<int32_t>(std::nearbyint(-lo * inv));
    } else if (range >= levels * std::numeric_limits<float>::min()) {
      s = range / levels;
      inv = levels / range;
      z = static_cast<int32_t>(std::nearbyint(-lo * inv));
    }  // else a range below ~1e-36 (or none): the row is zero here (1 / range would overflow)
    if (inv > 0.0f) {
#if defined(__x86_64__)
      if (avx2) quantize_row_u8_avx2(x, k, inv, z, u);
#endif
      if (!avx2) quantize_row_u8(x, k, inv, z, u);
    } else {
      std::fill(u, u + k, static_cast<uint8_t>(0));
    }
    std::fill(u + k, u + kp, static_cast<uint8_t>(z));
    for (size_t t = 0; t < w.ext_src.size(); ++t) u[ext0 + int64_t(t)] = u[w.ext_src[t]];
    r.scale[i] = s;
    r.zero[i] = z;
  }
  return r;
}

// Writes those of the 8 columns [col, col + 8) of one output row that fall in
// [c0, c1) (the kernels start at c0's block: a range may begin inside one).
inline void store_cols(float* c_row, int64_t col, int64_t c0, int64_t c1, const float* v) {
  const int64_t from = std::max<int64_t>(0, c0 - col), to = std::min<int64_t>(kBlock, c1 - col);
  if (to > from) std::memcpy(c_row + col + from, v + from, size_t(to - from) * sizeof(float));
}

#if !defined(__x86_64__)
void qmatmul_portable(int64_t m, const QuantizedRows& a, const QuantizedMatrix& w, int64_t c0, int64_t c1, float* c,
                      int64_t ldc, const QuantEpilogue& epi) {
  const int64_t groups = w.kp / 4;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* ua = &a.u[i * w.kp];
    for (int64_t col = c0 / kBlock * kBlock; col < c1; col += kBlock) {
      const int8_t* blk = &w.packed[(col / kBlock) * groups * 32];
      int32_t acc[kBlock] = {};
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = 0; j < kBlock; ++j)
          for (int64_t t = 0; t < 4; ++t) acc[j] += int32_t(ua[g * 4 + t]) * int32_t(blk[g * 32 + j * 4 + t]);
      float v[kBlock];
      for (int64_t j = 0; j < kBlock; ++j) {
        v[j] = float(acc[j] - a.zero[i] * w.col_sum[col + j]) * (a.scale[i] * w.scale[col + j]);
        if (epi.bias && col + j < c1) v[j] += epi.bias[col + j];
        v[j] = std::min(std::max(v[j], epi.lo), epi.hi);
      }
      store_cols(c + i * ldc, col, c0, c1, v);
    }
  }
}
#endif

#if defined(__x86_64__)
// dot4x16_avx2 on 128-bit vectors: one 8-column block (two halves of 4).
__attribute__((noinline)) void dot4x8_sse(const uint8_t* const ua[4], const int8_t* wb, int64_t groups,
                                          __m128i acc[4][2]) {
  const __m128i ones = _mm_set1_epi16(1);
  __m128i a[4][2];
  for (auto& ai : a) ai[0] = ai[1] = _mm_setzero_si128();
  for (int64_t g = 0; g < groups; ++g) {
    const __m128i wv0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + g * 32));
    const __m128i wv1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + g * 32 + 16));
    for (int i = 0; i < 4; ++i) {
      int32_t uv;
      std::memcpy(&uv, ua[i] + g * 4, 4);
      const __m128i u = _mm_set1_epi32(uv);
      a[i][0] = _mm_add_epi32(a[i][0], _mm_madd_epi16(_mm_maddubs_epi16(u, wv0), ones));
      a[i][1] = _mm_add_epi32(a[i][1], _mm_madd_epi16(_mm_maddubs_epi16(u, wv1), ones));
    }
  }
  for (int i = 0; i < 4; ++i) acc[i][0] = a[i][0], acc[i][1] = a[i][1];
}

// The portable level (x86-64-v2: SSSE3, SSE4.1): the AVX2 kernel below on
// 128-bit vectors, 4 rows x 8 columns per step (a plain-C++ loop here was 10x
// slower than float32 sgemm).
void qmatmul_sse(int64_t m, const QuantizedRows& a, const QuantizedMatrix& w, int64_t c0, int64_t c1, float* c,
                 int64_t ldc, const QuantEpilogue& epi) {
  const int64_t kp = w.kp, groups = kp / 4;
  const __m128 lo = _mm_set1_ps(epi.lo), hi = _mm_set1_ps(epi.hi);
  for (int64_t r0 = 0; r0 < m; r0 += kRowTile) {
    const int64_t r1 = std::min(m, r0 + kRowTile);
    for (int64_t col = c0 / kBlock * kBlock; col < c1; col += kBlock) {
      const int8_t* wb = &w.packed[(col / kBlock) * groups * 32];
      float bias[kBlock] = {};
      if (epi.bias) std::memcpy(bias, epi.bias + col, size_t(std::min<int64_t>(kBlock, c1 - col)) * sizeof(float));
      for (int64_t r = r0; r < r1; r += 4) {
        const uint8_t* ua[4];
        for (int i = 0; i < 4; ++i) ua[i] = &a.u[std::min(r + i, r1 - 1) * kp];
        __m128i acc[4][2];
        dot4x8_sse(ua, wb, groups, acc);
        for (int i = 0; i < 4 && r + i < r1; ++i) {
          const __m128 sa = _mm_set1_ps(a.scale[r + i]);
          const __m128i z = _mm_set1_epi32(a.zero[r + i]);
          float v[kBlock];
          for (int h = 0; h < 2; ++h) {
            const __m128i cs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&w.col_sum[col + 4 * h]));
            const __m128 ws = _mm_loadu_ps(&w.scale[col + 4 * h]);
            const __m128i d = _mm_sub_epi32(acc[i][h], _mm_mullo_epi32(z, cs));
            const __m128 y = _mm_add_ps(_mm_mul_ps(_mm_cvtepi32_ps(d), _mm_mul_ps(sa, ws)), _mm_loadu_ps(bias + 4 * h));
            _mm_storeu_ps(v + 4 * h, _mm_min_ps(hi, _mm_max_ps(lo, y)));  // NaN passes (see qmatmul_avx2)
          }
          store_cols(c + (r + i) * ldc, col, c0, c1, v);
        }
      }
    }
  }
}

// acc[i][h] = the int32 sums of row ua[i] with the 8 columns of block w_h, over
// `groups` groups of 4 k, by dpbusd(acc, u, w): acc + the 4 products u8 x s8
// of each 32-bit lane. Written once, compiled three times: with vpmaddubsw +
// vpmaddwd + vpaddd (AVX2: vpmaddubsw adds pairs into int16 (no saturation:
// see kPairLimit), vpmaddwd by 1 widens them into int32), and with VNNI's
// vpdpbusd, one instruction for the three (AVX512-VNNI + VL, EVEX; AVX-VNNI,
// VEX): the same integers, so the results do not change, only the speed.
// Its own function (not inlined) so that the epilogue's constants cannot push
// the 8 accumulators out of registers: they spilled to the stack when it was
// inlined, and int8 fell to float32's speed.
#define VISMEM_DOT4X16(name, target_str, dpbusd)                                                                \
  __attribute__((target(target_str), noinline)) void name(const uint8_t* const ua[4], const int8_t* w0,         \
                                                          const int8_t* w1, int64_t groups, __m256i acc[4][2]) { \
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,     \
            a31 = a00;                                                                                          \
    for (int64_t g = 0; g < groups; ++g) {                                                                      \
      const __m256i wv0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + g * 32));                    \
      const __m256i wv1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + g * 32));                    \
      int32_t uv[4];                                                                                            \
      for (int i = 0; i < 4; ++i) std::memcpy(&uv[i], ua[i] + g * 4, 4);                                       \
      __m256i u = _mm256_set1_epi32(uv[0]);                                                                     \
      a00 = dpbusd(a00, u, wv0);                                                                                \
      a01 = dpbusd(a01, u, wv1);                                                                                \
      u = _mm256_set1_epi32(uv[1]);                                                                             \
      a10 = dpbusd(a10, u, wv0);                                                                                \
      a11 = dpbusd(a11, u, wv1);                                                                                \
      u = _mm256_set1_epi32(uv[2]);                                                                             \
      a20 = dpbusd(a20, u, wv0);                                                                                \
      a21 = dpbusd(a21, u, wv1);                                                                                \
      u = _mm256_set1_epi32(uv[3]);                                                                             \
      a30 = dpbusd(a30, u, wv0);                                                                                \
      a31 = dpbusd(a31, u, wv1);                                                                                \
    }                                                                                                           \
    acc[0][0] = a00, acc[0][1] = a01, acc[1][0] = a10, acc[1][1] = a11;                                         \
    acc[2][0] = a20, acc[2][1] = a21, acc[3][0] = a30, acc[3][1] = a31;                                         \
  }
__attribute__((target("avx2,fma"), always_inline)) inline __m256i dpbusd_avx2(__m256i acc, __m256i u, __m256i w) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, w), _mm256_set1_epi16(1)));
}
VISMEM_DOT4X16(dot4x16_avx2, "avx2,fma", dpbusd_avx2)
VISMEM_DOT4X16(dot4x16_avx512vnni, "avx512f,avx512vl,avx512vnni,avx2,fma", _mm256_dpbusd_epi32)
VISMEM_DOT4X16(dot4x16_avxvnni, "avxvnni,avx2,fma", _mm256_dpbusd_avx_epi32)
#undef VISMEM_DOT4X16

enum class DotKind { avx2, avx512vnni, avxvnni };

// The fastest of the three this CPU and level run (cpu_isa() at each call, so
// that VISMEM_ISA=avx2 and the tests' set_isa leave AVX-512 VNNI out).
DotKind dot_kind_for_cpu() {
  const CpuFeatures& f = cpu_features();
  if (cpu_isa() >= Isa::avx512 && f.avx512vnni) return DotKind::avx512vnni;
  if (f.avxvnni) return DotKind::avxvnni;
  return DotKind::avx2;
}

// bias[col, col + 8) as a vector; columns past c1 are never read: those lanes
// get zero, as do all without a bias. (A function of its own, not a lambda in
// qmatmul_avx2: a lambda does not inherit its target attribute, and at the
// x86-64-v2 baseline the AVX intrinsics could not be inlined into it.)
__attribute__((target("avx2,fma"))) inline __m256 load_bias8_avx2(const float* bias, int64_t col, int64_t c1) {
  if (!bias) return _mm256_setzero_ps();
  float b[kBlock] = {};
  std::memcpy(b, bias + col, size_t(std::min<int64_t>(kBlock, c1 - col)) * sizeof(float));
  return _mm256_loadu_ps(b);
}

// 4 rows x 16 columns per step: per 4 k, two 32-byte weight vectors (an
// L1-hot panel) against each row's 4 activations broadcast. vpmaddubsw
// multiplies u8 activations by s8 weights and adds pairs into int16 (no
// saturation: see kPairLimit); vpmaddwd by 1 widens the pairs into int32.
// Epilogue: subtract zero * column sum, scale to float.
__attribute__((target("avx2,fma"))) void qmatmul_avx2(int64_t m, const QuantizedRows& a, const QuantizedMatrix& w,
                                                      int64_t c0, int64_t c1, float* c, int64_t ldc,
                                                      const QuantEpilogue& epi) {
  const int64_t kp = w.kp, groups = kp / 4;
  const __m256 lo = _mm256_set1_ps(epi.lo), hi = _mm256_set1_ps(epi.hi);
  const DotKind dot = dot_kind_for_cpu();
  for (int64_t r0 = 0; r0 < m; r0 += kRowTile) {
    const int64_t r1 = std::min(m, r0 + kRowTile);
    for (int64_t col = c0 / kBlock * kBlock; col < c1; col += 2 * kBlock) {
      const bool two = col + kBlock < c1;
      const int64_t col1 = two ? col + kBlock : col;
      const int8_t* w0 = &w.packed[(col / kBlock) * groups * 32];
      const int8_t* w1 = &w.packed[(col1 / kBlock) * groups * 32];
      for (int64_t r = r0; r < r1; r += 4) {
        // Rows past the end repeat the last row (computed, not stored).
        const uint8_t* ua[4];
        for (int i = 0; i < 4; ++i) ua[i] = &a.u[std::min(r + i, r1 - 1) * kp];
        __m256i acc[4][2];
        // Direct calls, not a pointer: GCC then knows which registers each
        // clobbers and keeps the epilogue's values in the others (through a
        // pointer int8 ran 2 to 18% slower).
        if (dot == DotKind::avx512vnni)
          dot4x16_avx512vnni(ua, w0, w1, groups, acc);
        else if (dot == DotKind::avxvnni)
          dot4x16_avxvnni(ua, w0, w1, groups, acc);
        else
          dot4x16_avx2(ua, w0, w1, groups, acc);
        const __m256i cs0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.col_sum[col]));
        const __m256i cs1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.col_sum[col1]));
        const __m256 ws0 = _mm256_loadu_ps(&w.scale[col]), ws1 = _mm256_loadu_ps(&w.scale[col1]);
        const __m256 b0 = load_bias8_avx2(epi.bias, col, c1), b1 = load_bias8_avx2(epi.bias, col1, c1);
        for (int i = 0; i < 4 && r + i < r1; ++i) {
          const __m256 sa = _mm256_set1_ps(a.scale[r + i]);
          const __m256i z = _mm256_set1_epi32(a.zero[r + i]);
          float v[2][kBlock];
          const __m256i d0 = _mm256_sub_epi32(acc[i][0], _mm256_mullo_epi32(z, cs0));
          const __m256i d1 = _mm256_sub_epi32(acc[i][1], _mm256_mullo_epi32(z, cs1));
          // (d * (sa * ws)) + b, then the clamp: the same operations, in the same
          // order, as the portable epilogue (no FMA contraction), so every level agrees.
          const __m256 y0 = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d0), _mm256_mul_ps(sa, ws0)), b0);
          const __m256 y1 = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d1), _mm256_mul_ps(sa, ws1)), b1);
          // maxps / minps return the second operand where one is NaN: y's NaN
          // passes, as through the portable epilogue's std::max / std::min.
          _mm256_storeu_ps(v[0], _mm256_min_ps(hi, _mm256_max_ps(lo, y0)));
          _mm256_storeu_ps(v[1], _mm256_min_ps(hi, _mm256_max_ps(lo, y1)));
          store_cols(c + (r + i) * ldc, col, c0, c1, v[0]);
          if (two) store_cols(c + (r + i) * ldc, col1, c0, c1, v[1]);
        }
      }
    }
  }
}
#endif

}  // namespace

QuantizedMatrix quantize_rows(const float* w, int64_t n, int64_t k, const float* grid) {
  if (n <= 0 || k <= 0) throw Error("quantize_rows: empty matrix");
  QuantizedMatrix q;
  q.n = n;
  q.k = k;
  std::vector<int8_t> codes(size_t(n * k));
  std::vector<float> row_scale(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)
    row_scale[j] = quantize_weight_row(w + j * k, k, k, grid ? grid[j] : 0.0f, &codes[size_t(j * k)]);
  std::vector<int8_t> ext;  // [n, ext_src.size()]
  if (wide_plan(codes, n, k, q.ext_src, ext)) q.act_levels = 255;
  q.kp = (q.kp_main() + int64_t(q.ext_src.size()) + 3) / 4 * 4;
  const int64_t blocks = (n + kBlock - 1) / kBlock, groups = q.kp / 4, ne = int64_t(q.ext_src.size());
  q.packed.assign(size_t(blocks * groups * 32), 0);
  q.scale.assign(size_t(blocks * kBlock), 0.0f);
  q.col_sum.assign(size_t(blocks * kBlock), 0);
  std::vector<int8_t> row(size_t(q.kp));
  for (int64_t j = 0; j < n; ++j) {
    std::fill(row.begin(), row.end(), int8_t(0));
    std::memcpy(row.data(), &codes[size_t(j * k)], size_t(k));
    if (ne > 0) std::memcpy(row.data() + q.kp_main(), &ext[size_t(j * ne)], size_t(ne));
    q.scale[j] = row_scale[j];
    for (int8_t v : row) q.col_sum[j] += v;
    int8_t* blk = &q.packed[(j / kBlock) * groups * 32];
    for (int64_t g = 0; g < groups; ++g) std::memcpy(blk + g * 32 + (j % kBlock) * 4, &row[g * 4], 4);
  }
  return q;
}

void qmatmul(int64_t m, const float* a, int64_t lda, const QuantizedMatrix& w, int64_t c0, int64_t c1, float* c,
             int64_t ldc, const QuantEpilogue& epi) {
  if (c0 < 0 || c1 > w.n) throw Error("qmatmul: bad column range");
  if (m <= 0 || c0 >= c1) return;
  const QuantizedRows qa = quantize_activations(m, a, lda, w);
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::avx2) return qmatmul_avx2(m, qa, w, c0, c1, c, ldc, epi);
  return qmatmul_sse(m, qa, w, c0, c1, c, ldc, epi);
#else
  qmatmul_portable(m, qa, w, c0, c1, c, ldc, epi);
#endif
}

}  // namespace vismem
