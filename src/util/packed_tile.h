// packed_tile.h: the register tiles behind pmatmul (packed_gemm.h), one set per
// panel layout and kernel level. Internal to packed_gemm.cpp and its tests.
//
// A tile computes rows [0, MR) of C over one panel of the packed weights:
//   c[r, t] = init[t] (or c[r, t] itself where init is null) + sum_kk x[kk * MR + r] * w[kk * cols + t]
// for t in [0, cols) (whole) or [lo, hi) (part: C's other columns are neither
// read nor written), summed in the order kk = 0, 1, ... with one FMA each:
// every tile of every set gives the same floats (plain C++ rounds the
// product first: the portable level only).
//   x: [kc][MR] (A's rows interleaved by pack_a), w: [kc][cols], c: row stride ldc.
// Thread safety: the tables are immutable; tiles touch only their arguments.
#pragma once
#include <cstdint>
#include <utility>

namespace vismem::tile {

using TileFn = void (*)(int64_t kc, const float* x, const float* w, float* c, int64_t ldc, const float* init, int lo,
                        int hi);

constexpr int kMaxRows = 12;

struct TileSet {
  int rows = 0;      // MR: rows of A per tile (A is packed in groups of this many)
  int64_t cols = 0;  // panel width of the layout these tiles read
  TileFn whole[kMaxRows + 1] = {};  // [mr], mr in 1..rows: a tile of mr rows, all columns
  TileFn part[kMaxRows + 1] = {};   // [mr]: columns [lo, hi) only
};

// A set from a tile family T (T::kRows, T::kCols, T::fn<MR, Masked>;
// packed_tile_impl.h): tiles of 1..T::kRows rows (the last tiles of a block
// may be shorter). Defined here, outside any target pragma.
template <class T, int... I>
TileSet make_set(std::integer_sequence<int, I...>) {
  static_assert(T::kRows <= kMaxRows);
  TileSet s;
  s.rows = T::kRows;
  s.cols = T::kCols;
  ((s.whole[I + 1] = &T::template fn<I + 1, false>), ...);
  ((s.part[I + 1] = &T::template fn<I + 1, true>), ...);
  return s;
}
template <class T>
TileSet make_set() {
  return make_set<T>(std::make_integer_sequence<int, T::kRows>());
}

// 24-column panels: 4 x 24 with three 256-bit vectors per row (AVX2 + FMA).
const TileSet& avx2_24();
// 32-column panels: 12 x 32 with two 512-bit vectors per row (AVX-512F).
const TileSet& avx512_32();
// The same 12 x 32 tile, each 512-bit vector as two 256-bit halves (AVX2 +
// FMA): the tests' way to run that tile's logic where no AVX-512 CPU is at
// hand, and what a 32-column matrix runs below the avx512 level. Not fast: its
// 48 accumulators do not fit in 16 registers (about 30 GFLOP/s on Zen 3,
// against 90 for the 4 x 24 tile); pack_rows picks 24 columns below avx512.
const TileSet& emulated512_32();
// Plain C++, 4 rows, for either layout (the portable level).
const TileSet& plain(int64_t cols);

}  // namespace vismem::tile
