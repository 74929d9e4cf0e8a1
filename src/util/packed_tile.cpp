// The portable tiles of packed_tile.h: plain C++, 4 rows, either layout.
#include "packed_tile.h"

#include "error.h"

namespace vismem::tile {
namespace {

template <int MR, int COLS>
void tile_plain(int64_t kc, const float* x, const float* w, float* c, int64_t ldc, const float* init, int lo, int hi) {
  for (int r = 0; r < MR; ++r) {
    float acc[COLS];
    for (int t = lo; t < hi; ++t) acc[t] = init ? init[t] : c[r * ldc + t];
    for (int64_t kk = 0; kk < kc; ++kk) {
      const float xv = x[kk * MR + r];
      for (int t = lo; t < hi; ++t) acc[t] += xv * w[kk * COLS + t];
    }
    for (int t = lo; t < hi; ++t) c[r * ldc + t] = acc[t];
  }
}

// Whole tiles pass lo = 0, hi = cols; the plain tile reads them either way.
template <int COLS>
TileSet plain_set() {
  TileSet s;
  s.rows = 4;
  s.cols = COLS;
  const TileFn fns[] = {tile_plain<1, COLS>, tile_plain<2, COLS>, tile_plain<3, COLS>, tile_plain<4, COLS>};
  for (int mr = 1; mr <= 4; ++mr) s.whole[mr] = s.part[mr] = fns[mr - 1];
  return s;
}

}  // namespace

const TileSet& plain(int64_t cols) {
  static const TileSet s24 = plain_set<24>(), s32 = plain_set<32>();
  if (cols == 24) return s24;
  if (cols == 32) return s32;
  throw Error("packed matrix: no tiles for panels of " + std::to_string(cols) + " columns");
}

}  // namespace vismem::tile
