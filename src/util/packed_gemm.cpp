#include "packed_gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cpu.h"
#include "error.h"
#include "linalg.h"
#include "packed_tile.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vismem {

namespace {

constexpr int64_t kDepth = PackedMatrix::kDepth;
// A rows packed at a time: 320 x 384 floats = 480 KB, this CPU's L2 (blocks of
// equal size, rounded up to the tile's rows: up to 324 for the 12-row tile).
constexpr int64_t kMaxBlockRows = 320;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The panel block of W for k block [k0, k0 + kc) and panel p: [kc][w.cols].
const float* panel(const PackedMatrix& w, int64_t k0, int64_t kc, int64_t p) {
  return w.data.data() + k0 * round_up(w.n, w.cols) + p * kc * w.cols;
}

#if defined(__x86_64__)
// Four rows of A, columns [0, kc), interleaved into a micro-panel of os rows:
// out[kk * os + r] = a[r * lda + kk], eight columns at a time as a 4 x 8
// transpose in registers (scalar, packing took 6% of a ViT-S forward; more
// where k is large and n small, as in fc2). os = 4: whole 32-float stores;
// else each column's four floats on their own.
__attribute__((target("avx2,fma"))) void interleave4_avx2(const float* a, int64_t lda, int64_t kc, int64_t os,
                                                           float* out) {
  int64_t kk = 0;
  for (; kk + 8 <= kc; kk += 8) {
    const __m256 r0 = _mm256_loadu_ps(a + kk), r1 = _mm256_loadu_ps(a + lda + kk),
                 r2 = _mm256_loadu_ps(a + 2 * lda + kk), r3 = _mm256_loadu_ps(a + 3 * lda + kk);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);  // columns 0,4 / 1,5
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);  // columns 2,6 / 3,7
    float* o = out + kk * os;
    if (os == 4) {
      _mm256_storeu_ps(o, _mm256_permute2f128_ps(u0, u1, 0x20));
      _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
      _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
      _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
    } else {
      const __m256 col[4] = {u0, u1, u2, u3};
      for (int j = 0; j < 4; ++j) {
        _mm_storeu_ps(o + j * os, _mm256_castps256_ps128(col[j]));
        _mm_storeu_ps(o + (j + 4) * os, _mm256_extractf128_ps(col[j], 1));
      }
    }
  }
  for (; kk < kc; ++kk)
    for (int r = 0; r < 4; ++r) out[kk * os + r] = a[r * lda + kk];
}
#endif

// How mc rows are cut into tiles of at most mr_max rows: as many tiles as
// needed, their sizes as even as they go (257 rows for the 4-row tile: 62 of
// 4 and 3 of 3, not 64 and a 1-row one, whose 3 accumulators wait on the FMA
// latency: on Zen 3, in L1, 37 GFLOP/s against 86 for 3 rows and 90 for 4;
// 13 rows for the 12-row tile: 7 + 6, not 12 + 1). A whole ViT moved by less
// than its run-to-run noise (0.98x to 1.02x, in one process alternating).
struct RowTiles {
  int64_t count, base, extra;  // tiles; rows per tile; the first `extra` tiles have one more
  RowTiles(int64_t mc, int64_t mr_max)
      : count((mc + mr_max - 1) / mr_max), base(mc / count), extra(mc % count) {}
  int64_t start(int64_t j) const { return j * base + std::min(j, extra); }
  int64_t rows(int64_t j) const { return base + (j < extra ? 1 : 0); }
};

// A's rows [r0, r0 + mc) and columns [k0, k0 + kc) as one micro-panel per
// tile, [kc][tile's rows] each: the tile's row loads become one sequential stream.
void pack_a(const float* a, int64_t lda, int64_t r0, const RowTiles& plan, int64_t k0, int64_t kc, float* out) {
  for (int64_t j = 0; j < plan.count; ++j) {
    const int64_t i = plan.start(j), mr = plan.rows(j);
    float* o = out + i * kc;
    int64_t r = 0;
#if defined(__x86_64__)
    if (cpu_isa() >= Isa::avx2)
      for (; r + 4 <= mr; r += 4) interleave4_avx2(a + (r0 + i + r) * lda + k0, lda, kc, mr, o + r);
#endif
    for (; r < mr; ++r) {
      const float* src = a + (r0 + i + r) * lda + k0;
      for (int64_t kk = 0; kk < kc; ++kk) o[kk * mr + r] = src[kk];
    }
  }
}

// The tiles that read w's layout at this kernel level (cpu_isa() at each call,
// so that VISMEM_ISA=portable and the tests' set_isa run the plain tiles).
const tile::TileSet& tiles_for(const PackedMatrix& w) {
#if defined(__x86_64__)
  if (w.cols == 24 && cpu_isa() >= Isa::avx2) return tile::avx2_24();
  if (w.cols == 32 && cpu_isa() >= Isa::avx512) return tile::avx512_32();
  if (w.cols == 32 && cpu_isa() >= Isa::avx2) return tile::emulated512_32();
#endif
  return tile::plain(w.cols);
}

}  // namespace

int64_t packed_cols_for_cpu() { return cpu_isa() >= Isa::avx512 ? 32 : 24; }

bool packed_gemm_preferred_for(Isa isa, const std::string& blas_core) {
  if (isa == Isa::avx2) return true;
  // On AVX-512 OpenBLAS's own AVX-512 sgemm was faster than our 256-bit tile
  // (H200 host's Xeon, 1 thread, 257 x 3072 x 768: 142 against 84 GFLOP/s);
  // where it runs narrower kernels (a CPU it did not recognize: Prescott's
  // SSE3 at 30 GFLOP/s, ViT-S 2.5x slower) the packed tile is the faster one.
  // The 512-bit tile that avx512 packing now runs has not been timed against
  // OpenBLAS's kernels yet: until it is, the rule stays (VISMEM_PACKED=1 packs anyway).
  return isa == Isa::avx512 && !blas_core_has_avx512(blas_core);
}

bool packed_gemm_preferred() {
  static const int forced = [] {
    const char* v = std::getenv("VISMEM_PACKED");
    if (v == nullptr || *v == '\0') return -1;
    if (std::string(v) == "1") return 1;
    if (std::string(v) == "0") return 0;
    std::fprintf(stderr, "vismem: VISMEM_PACKED=%s ignored (1: pack the weights, 0: OpenBLAS sgemm)\n", v);
    return -1;
  }();
  if (forced >= 0) return forced == 1;
  return packed_gemm_preferred_for(cpu_isa(), blas_core());
}

void pack_strided(const float* src, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, float scale,
                  PackedMatrix& out, int64_t cols) {
  if (n <= 0 || k <= 0)
    throw Error("packing an empty matrix (" + std::to_string(n) + " x " + std::to_string(k) + ")");
  if (cols == 0) cols = packed_cols_for_cpu();
  if (cols != 24 && cols != 32) throw Error("packing: panels of " + std::to_string(cols) + " columns (24 or 32)");
  out.n = n;
  out.k = k;
  out.cols = cols;
  const int64_t np = round_up(n, cols);
  out.data.resize(size_t(np * k));  // reuses the capacity of an earlier packing
  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, k - k0);
    for (int64_t pn = 0; pn < np / cols; ++pn) {
      float* o = out.data.data() + k0 * np + pn * kc * cols;
      const int64_t used = std::min(cols, n - pn * cols);
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* src_k = src + (k0 + kk) * col_stride + pn * cols * row_stride;
        for (int64_t t = 0; t < used; ++t) o[kk * cols + t] = src_k[t * row_stride] * scale;
        std::fill(o + kk * cols + used, o + (kk + 1) * cols, 0.0f);
      }
    }
  }
}

PackedMatrix pack_rows(const float* w, int64_t n, int64_t k, int64_t cols) {
  PackedMatrix p;
  pack_strided(w, n, k, k, 1, 1.0f, p, cols);
  return p;
}

void pmatmul(int64_t m, const float* a, int64_t lda, const PackedMatrix& w, int64_t c0, int64_t c1,
             const float* bias, float* c, int64_t ldc) {
  if (w.empty()) throw Error("pmatmul: the matrix is not packed");
  if (c0 < 0 || c1 > w.n || c0 > c1)
    throw Error("pmatmul: column range [" + std::to_string(c0) + ", " + std::to_string(c1) + ") is outside 0.." +
                std::to_string(w.n));
  if (m <= 0 || c0 == c1) return;
  const tile::TileSet& tiles = tiles_for(w);
  const int64_t k = w.k, cols = w.cols, mr_max = tiles.rows;
  const int64_t blocks = (m + kMaxBlockRows - 1) / kMaxBlockRows;
  const int64_t mc_max = round_up((m + blocks - 1) / blocks, mr_max);
  thread_local std::vector<float> apack;  // [mc_max, kDepth] micro-panels of A
  apack.resize(size_t(mc_max * std::min(kDepth, k)));

  // Panels [p0, p1) cover [c0, c1). One only partly wanted (at either end of
  // the range, or past w.n) runs the masked tile on its wanted columns.
  const int64_t p0 = c0 / cols, p1 = (c1 + cols - 1) / cols;
  const float zero_bias[32] = {};

  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, k - k0);
    for (int64_t r0 = 0; r0 < m; r0 += mc_max) {
      const int64_t mc = std::min(mc_max, m - r0);
      const RowTiles plan(mc, mr_max);
      pack_a(a, lda, r0, plan, k0, kc, apack.data());
      for (int64_t p = p0; p < p1; ++p) {
        const float* wp = panel(w, k0, kc, p);
        const int lo = static_cast<int>(std::max(c0, p * cols) - p * cols);
        const int hi = static_cast<int>(std::min(c1, (p + 1) * cols) - p * cols);
        const bool whole = lo == 0 && hi == cols;
        const float* init = k0 > 0 ? nullptr : bias ? bias + p * cols : zero_bias;
        const tile::TileFn* fn = whole ? tiles.whole : tiles.part;
        float* cp = c + p * cols;
        for (int64_t j = 0; j < plan.count; ++j) {
          const int64_t i = plan.start(j);
          fn[plan.rows(j)](kc, apack.data() + i * kc, wp, cp + (r0 + i) * ldc, ldc, init, lo, hi);
        }
      }
    }
  }
}

}  // namespace vismem
