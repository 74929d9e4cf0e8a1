// packed_tile_impl.h: the register tile of packed_tile.h, written once over a
// vector type and compiled per level: included by packed_tile_avx2.cpp and
// packed_tile_avx512.cpp inside their `#pragma GCC target`, in namespace
// vismem::tile::VISMEM_TILE_NS, after defining there:
//   Vec:  kLanes; R (a register of kLanes floats); Mask; mask(lo, hi) (lanes l
//         with lo <= l < hi, any ints); load(p), load(p, mask) (masked lanes
//         are 0 and never read), store(p, r), store(p, r, mask) (masked lanes
//         never written), bcast(p) (all lanes *p), fma(a, b, c) (a * b + c,
//         rounded once);
//   kMR:  rows per tile; kNV: vectors per row (panel width kNV * kLanes).
// No include guard: a file includes it once per namespace.

// Rows [0, MR) x the panel, as packed_tile.h says. Every loop is unrolled so
// the accumulators stay in registers (a loop over them left in place spills
// them to the stack: 35% of the FMA rate). noinline: inlined into pmatmul's
// loops GCC spilled them (as in qgemm).
template <int MR, bool Masked>
__attribute__((noinline)) void tile_fn(int64_t kc, const float* x, const float* w, float* c, int64_t ldc,
                                       const float* init, int lo, int hi) {
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

// The set: tiles of 1..kMR rows (the last tile of a block may be short).
template <int... I>
TileSet make_set(std::integer_sequence<int, I...>) {
  TileSet s;
  s.rows = kMR;
  s.cols = kNV * Vec::kLanes;
  ((s.whole[I + 1] = tile_fn<I + 1, false>), ...);
  ((s.part[I + 1] = tile_fn<I + 1, true>), ...);
  return s;
}
