#include "packed_gemm.h"

#include <algorithm>
#include <string>

#include "cpu.h"
#include "error.h"
#include "linalg.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vismem {

namespace {

constexpr int64_t kCols = PackedMatrix::kCols;
constexpr int64_t kDepth = PackedMatrix::kDepth;
constexpr int kRows = 4;           // rows of A per register tile (4 x 24 = 12 accumulators)
constexpr int64_t kMaxBlockRows = 320;  // A rows packed at a time: 320 x 384 floats = 480 KB, this CPU's L2

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The panel block of W for k block [k0, k0 + kc) and panel p: [kc][24].
const float* panel(const PackedMatrix& w, int64_t k0, int64_t kc, int64_t p) {
  return w.data.data() + k0 * round_up(w.n, kCols) + p * kc * kCols;
}

#if defined(__x86_64__)
// Four rows of A, columns [0, kc), interleaved: out[kk * 4 + r] = a[r * lda + kk],
// eight columns at a time as a 4 x 8 transpose in registers (scalar, packing
// took 6% of a ViT-S forward; more where k is large and n small, as in fc2).
__attribute__((target("avx2,fma"))) void interleave4_avx2(const float* a, int64_t lda, int64_t kc, float* out) {
  int64_t kk = 0;
  for (; kk + 8 <= kc; kk += 8) {
    const __m256 r0 = _mm256_loadu_ps(a + kk), r1 = _mm256_loadu_ps(a + lda + kk),
                 r2 = _mm256_loadu_ps(a + 2 * lda + kk), r3 = _mm256_loadu_ps(a + 3 * lda + kk);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);  // columns 0,4 / 1,5
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);  // columns 2,6 / 3,7
    float* o = out + kk * 4;
    _mm256_storeu_ps(o, _mm256_permute2f128_ps(u0, u1, 0x20));
    _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
    _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
  }
  for (; kk < kc; ++kk)
    for (int r = 0; r < 4; ++r) out[kk * 4 + r] = a[r * lda + kk];
}
#endif

// A's rows [r0, r0 + mc) and columns [k0, k0 + kc) as micro-panels of kRows
// rows, [kc][kRows] each (the last one [kc][rows left]): the kernel's row
// loads become one sequential stream.
void pack_a(const float* a, int64_t lda, int64_t r0, int64_t mc, int64_t k0, int64_t kc, float* out) {
  for (int64_t i = 0; i < mc; i += kRows) {
    const int64_t mr = std::min<int64_t>(kRows, mc - i);
    float* o = out + i * kc;
#if defined(__x86_64__)
    if (mr == 4 && cpu_isa() >= Isa::avx2) {
      interleave4_avx2(a + (r0 + i) * lda + k0, lda, kc, o);
      continue;
    }
#endif
    for (int64_t r = 0; r < mr; ++r) {
      const float* src = a + (r0 + i + r) * lda + k0;
      for (int64_t kk = 0; kk < kc; ++kk) o[kk * mr + r] = src[kk];
    }
  }
}

// c[r, lo:hi] (+)= sum_kk x[kk, r] * w[kk, lo:hi] for r < MR, starting from
// init[lo:hi] (init: the panel's bias) or from c itself when init is null; c points
// at the panel's column 0, and columns outside [lo, hi) of the panel are
// neither read nor written (they may lie before c0 or past the matrix's last
// column). Plain C++: the portable path.
template <int MR>
void tile_plain(int64_t kc, const float* x, const float* w, float* c, int64_t ldc, const float* init, int lo, int hi) {
  for (int r = 0; r < MR; ++r) {
    float acc[kCols];
    for (int t = lo; t < hi; ++t) acc[t] = init ? init[t] : c[r * ldc + t];
    for (int64_t kk = 0; kk < kc; ++kk) {
      const float xv = x[kk * MR + r];
      for (int t = lo; t < hi; ++t) acc[t] += xv * w[kk * kCols + t];
    }
    for (int t = lo; t < hi; ++t) c[r * ldc + t] = acc[t];
  }
}

#if defined(__x86_64__)
// The AVX2 tile: 4 rows x 3 vectors of accumulators, one broadcast per row and
// k. Every loop is unrolled so the accumulators stay in registers (a loop
// over them left in place spills them to the stack: 35% of the FMA rate).
// noinline: inlined into the caller's loops GCC spilled them (as in qgemm).
// Masked: only lanes [lo, hi) of C and init are loaded and C stored
// (maskload / maskstore never touch the others); else the whole panel and
// lo, hi unused.
template <int MR, bool Masked>
__attribute__((target("avx2,fma"), noinline)) void tile_avx2(int64_t kc, const float* x, const float* w, float* c,
                                                            int64_t ldc, const float* init, int lo, int hi) {
  __m256i mask[3];
  if constexpr (Masked)
    for (int v = 0; v < 3; ++v) {
      const __m256i lane = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * v));
      mask[v] = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
    }
  __m256 acc[MR][3];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      if (init && Masked)
        acc[r][v] = _mm256_maskload_ps(init + 8 * v, mask[v]);
      else if (init)
        acc[r][v] = _mm256_loadu_ps(init + 8 * v);
      else if constexpr (Masked)
        acc[r][v] = _mm256_maskload_ps(c + r * ldc + 8 * v, mask[v]);
      else
        acc[r][v] = _mm256_loadu_ps(c + r * ldc + 8 * v);
    }
#pragma GCC unroll 4
  for (int64_t kk = 0; kk < kc; ++kk) {
    const __m256 w0 = _mm256_loadu_ps(w + kk * kCols), w1 = _mm256_loadu_ps(w + kk * kCols + 8),
                 w2 = _mm256_loadu_ps(w + kk * kCols + 16);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + kk * MR + r);
      acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(xv, w2, acc[r][2]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      if constexpr (Masked)
        _mm256_maskstore_ps(c + r * ldc + 8 * v, mask[v], acc[r][v]);
      else
        _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
    }
}
#endif

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, const float*, int, int);

struct Tiles {
  TileFn whole[kRows + 1];  // [mr]: a tile of mr rows, all 24 columns
  TileFn part[kRows + 1];   // [mr]: columns [lo, hi) of the panel only
};

// By cpu_isa() at each call, so that VISMEM_ISA=portable (and the tests) run the plain tiles.
const Tiles& tiles_for_cpu() {
  static const Tiles plain = {{nullptr, tile_plain<1>, tile_plain<2>, tile_plain<3>, tile_plain<4>},
                              {nullptr, tile_plain<1>, tile_plain<2>, tile_plain<3>, tile_plain<4>}};
#if defined(__x86_64__)
  static const Tiles avx2 = {
      {nullptr, tile_avx2<1, false>, tile_avx2<2, false>, tile_avx2<3, false>, tile_avx2<4, false>},
      {nullptr, tile_avx2<1, true>, tile_avx2<2, true>, tile_avx2<3, true>, tile_avx2<4, true>}};
  if (cpu_isa() >= Isa::avx2) return avx2;
#endif
  return plain;
}

}  // namespace

bool packed_gemm_preferred_for(Isa isa, const std::string& blas_core) {
  if (isa == Isa::avx2) return true;
  // On AVX-512 OpenBLAS's own AVX-512 sgemm is faster than our 256-bit tile
  // (H200 host's Xeon, 1 thread, 257 x 3072 x 768: 142 against 84 GFLOP/s);
  // where it runs narrower kernels (a CPU it did not recognize: Prescott's
  // SSE3 at 30 GFLOP/s, ViT-S 2.5x slower) the packed tile is the faster one.
  return isa == Isa::avx512 && !blas_core_has_avx512(blas_core);
}

bool packed_gemm_preferred() { return packed_gemm_preferred_for(cpu_isa(), blas_core()); }

void pack_strided(const float* src, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, float scale,
                  PackedMatrix& out) {
  if (n <= 0 || k <= 0)
    throw Error("packing an empty matrix (" + std::to_string(n) + " x " + std::to_string(k) + ")");
  out.n = n;
  out.k = k;
  const int64_t np = round_up(n, kCols);
  out.data.resize(size_t(np * k));  // reuses the capacity of an earlier packing
  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, k - k0);
    for (int64_t pn = 0; pn < np / kCols; ++pn) {
      float* o = out.data.data() + k0 * np + pn * kc * kCols;
      const int64_t cols = std::min(kCols, n - pn * kCols);
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* src_k = src + (k0 + kk) * col_stride + pn * kCols * row_stride;
        for (int64_t t = 0; t < cols; ++t) o[kk * kCols + t] = src_k[t * row_stride] * scale;
        std::fill(o + kk * kCols + cols, o + (kk + 1) * kCols, 0.0f);
      }
    }
  }
}

PackedMatrix pack_rows(const float* w, int64_t n, int64_t k) {
  PackedMatrix p;
  pack_strided(w, n, k, k, 1, 1.0f, p);
  return p;
}

void pmatmul(int64_t m, const float* a, int64_t lda, const PackedMatrix& w, int64_t c0, int64_t c1,
             const float* bias, float* c, int64_t ldc) {
  if (w.empty()) throw Error("pmatmul: the matrix is not packed");
  if (c0 < 0 || c1 > w.n || c0 > c1)
    throw Error("pmatmul: column range [" + std::to_string(c0) + ", " + std::to_string(c1) + ") is outside 0.." +
                std::to_string(w.n));
  if (m <= 0 || c0 == c1) return;
  const Tiles& tiles = tiles_for_cpu();
  const int64_t k = w.k;
  const int64_t blocks = (m + kMaxBlockRows - 1) / kMaxBlockRows;
  const int64_t mc_max = round_up((m + blocks - 1) / blocks, kRows);
  thread_local std::vector<float> apack;  // [mc_max, kDepth] micro-panels of A
  apack.resize(size_t(mc_max * std::min(kDepth, k)));

  // Panels [p0, p1) cover [c0, c1). One only partly wanted (at either end of
  // the range, or past w.n) runs the masked tile on its wanted columns.
  const int64_t p0 = c0 / kCols, p1 = (c1 + kCols - 1) / kCols;
  const float zero_bias[kCols] = {};

  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, k - k0);
    for (int64_t r0 = 0; r0 < m; r0 += mc_max) {
      const int64_t mc = std::min(mc_max, m - r0);
      pack_a(a, lda, r0, mc, k0, kc, apack.data());
      for (int64_t p = p0; p < p1; ++p) {
        const float* wp = panel(w, k0, kc, p);
        const int lo = static_cast<int>(std::max(c0, p * kCols) - p * kCols);
        const int hi = static_cast<int>(std::min(c1, (p + 1) * kCols) - p * kCols);
        const bool whole = lo == 0 && hi == kCols;
        const float* init = k0 > 0 ? nullptr : bias ? bias + p * kCols : zero_bias;
        const TileFn* fn = whole ? tiles.whole : tiles.part;
        float* cp = c + p * kCols;
        for (int64_t i = 0; i < mc; i += kRows) {
          const int64_t mr = std::min<int64_t>(kRows, mc - i);
          fn[mr](kc, apack.data() + i * kc, wp, cp + (r0 + i) * ldc, ldc, init, lo, hi);
        }
      }
    }
  }
}

}  // namespace vismem
