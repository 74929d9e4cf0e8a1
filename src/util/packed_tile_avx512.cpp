// The AVX-512 tile of packed_tile.h: 12 x 32 on the 32-column layout, two
// 512-bit vectors per row (24 accumulators of the 32 registers), one
// broadcast of A per row and k. Its logic also runs, as two 256-bit halves per
// vector, in packed_tile_avx2.cpp's emulated512_32(): the tests compare it
// there with the AVX2 tile, float for float, on CPUs without AVX-512.
#include "packed_tile.h"

#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")

namespace vismem::tile {
namespace {

struct Avx512 {
  static constexpr int kLanes = 16;
  using R = __m512;
  using Mask = __mmask16;
  static Mask mask(int lo, int hi) {
    lo = lo < 0 ? 0 : lo > 16 ? 16 : lo;
    hi = hi < 0 ? 0 : hi > 16 ? 16 : hi;
    if (hi <= lo) return 0;
    return static_cast<Mask>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
  }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, R r) { _mm512_storeu_ps(p, r); }
  static void store(float* p, R r, Mask m) { _mm512_mask_storeu_ps(p, m, r); }
  static R bcast(const float* p) { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
};

}  // namespace

namespace avx512 {
using Vec = Avx512;
constexpr int kMR = 12, kNV = 2;
#include "packed_tile_impl.h"
}  // namespace avx512

}  // namespace vismem::tile

#pragma GCC pop_options

namespace vismem::tile {
const TileSet& avx512_32() {
  static const TileSet s = make_set<avx512::Tile>();
  return s;
}
}  // namespace vismem::tile
#endif
