// packed_tile_impl.h: the register tile of packed_tile.h, written once over a
// vector type and compiled per level: included by packed_tile_avx2.cpp and
// packed_tile_avx512.cpp inside their `#pragma GCC target`, in a namespace of
// their own (avx2, emulated512, avx512), after defining there:
//   Vec:  kLanes; R (a register of kLanes floats); Mask; mask(lo, hi) (lanes l
//         with lo <= l < hi; lo and hi lie in [-2 * kLanes, 3 * kLanes]);
//         load(p), load(p, mask) (masked lanes are 0 and never read),
//         store(p, r), store(p, r, mask) (masked lanes never written),
//         bcast(p) (all lanes *p), fma(a, b, c) (a * b + c, rounded once);
//   kMR:  rows per tile; kNV: vectors per row (panel width kNV * kLanes).
// It defines Tile::fn<MR, Masked>, which packed_tile.h's make_set() puts in a
// TileSet outside the target pragma (code built under it may use the level's
// instructions even to fill a table).
// No include guard: a file includes it once per namespace.

// Rows [0, MR) x the panel, as packed_tile.h says. Every loop is unrolled so
// the accumulators stay in registers where they fit (a loop over them left in
// place spills them to the stack: 35% of the FMA rate; the emulated 512-bit
// family's 48 do not fit at all). noinline: inlined into pmatmul's loops GCC
// spilled them (as in qgemm).
struct Tile {
  static constexpr int kRows = kMR;
  static constexpr int64_t kCols = kNV * Vec::kLanes;
  template <int MR, bool Masked>
  __attribute__((noinline)) static void fn(int64_t kc, const float* x, const float* w, float* c, int64_t ldc,
                                           const float* init, int lo, int hi);
};

template <int MR, bool Masked>
void Tile::fn(int64_t kc, const float* x, const float* w, float* c, int64_t ldc, const float* init, int lo, int hi) {
  constexpr int L = Vec::kLanes, NV = kNV, W = NV * L;
  typename Vec::Mask mask[NV];
  if constexpr (Masked)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) mask[v] = Vec::mask(lo - v * L, hi - v * L);
  typename Vec::R acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const float* src = init ? init + v * L : c + r * ldc + v * L;
      if constexpr (Masked)
        acc[r][v] = Vec::load(src, mask[v]);
      else
        acc[r][v] = Vec::load(src);
    }
#pragma GCC unroll 4
  for (int64_t kk = 0; kk < kc; ++kk) {
    typename Vec::R wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(w + kk * W + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const typename Vec::R xv = Vec::bcast(x + kk * MR + r);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec::fma(xv, wv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (Masked)
        Vec::store(c + r * ldc + v * L, acc[r][v], mask[v]);
      else
        Vec::store(c + r * ldc + v * L, acc[r][v]);
    }
}
