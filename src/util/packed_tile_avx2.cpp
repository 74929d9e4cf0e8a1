// The AVX2 + FMA tiles of packed_tile.h: 4 x 24 on the 24-column layout, and
// the avx512 layout's 12 x 32 tile with each 512-bit vector as two 256-bit
// halves (the same FMAs on the same lanes: the same floats as avx512_32()).
#include "packed_tile.h"

#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace vismem::tile {
namespace {

struct Avx2 {
  static constexpr int kLanes = 8;
  using R = __m256;
  using Mask = __m256i;
  static Mask mask(int lo, int hi) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
  }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, R r) { _mm256_storeu_ps(p, r); }
  static void store(float* p, R r, Mask m) { _mm256_maskstore_ps(p, m, r); }
  static R bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
};

// 16 lanes as two AVX2 registers: lanes 0-7 in lo, 8-15 in hi.
struct Emulated512 {
  static constexpr int kLanes = 16;
  struct R {
    __m256 lo, hi;
  };
  struct Mask {
    __m256i lo, hi;
  };
  static Mask mask(int lo, int hi) { return {Avx2::mask(lo, hi), Avx2::mask(lo - 8, hi - 8)}; }
  static R load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static R load(const float* p, Mask m) { return {_mm256_maskload_ps(p, m.lo), _mm256_maskload_ps(p + 8, m.hi)}; }
  static void store(float* p, R r) {
    _mm256_storeu_ps(p, r.lo);
    _mm256_storeu_ps(p + 8, r.hi);
  }
  static void store(float* p, R r, Mask m) {
    _mm256_maskstore_ps(p, m.lo, r.lo);
    _mm256_maskstore_ps(p + 8, m.hi, r.hi);
  }
  static R bcast(const float* p) {
    const __m256 v = _mm256_broadcast_ss(p);
    return {v, v};
  }
  static R fma(R a, R b, R c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
};

}  // namespace

namespace avx2 {
using Vec = Avx2;
constexpr int kMR = 4, kNV = 3;
#include "packed_tile_impl.h"
}  // namespace avx2

namespace emulated512 {
using Vec = Emulated512;
constexpr int kMR = 12, kNV = 2;
#include "packed_tile_impl.h"
}  // namespace emulated512

}  // namespace vismem::tile

#pragma GCC pop_options

namespace vismem::tile {
const TileSet& avx2_24() {
  static const TileSet s = make_set<avx2::Tile>();
  return s;
}
const TileSet& emulated512_32() {
  static const TileSet s = make_set<emulated512::Tile>();
  return s;
}
}  // namespace vismem::tile
#endif
