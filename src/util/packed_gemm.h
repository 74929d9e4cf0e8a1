// packed_gemm.h: float32 products with a weight matrix packed once at load,
// for the encoders' linear layers and convs where packed_gemm_preferred().
//
// Basic usage:
//   vismem::PackedMatrix p = vismem::pack_rows(w.data(), n, k);  // W [n, k] (PyTorch layout), once
//   vismem::pmatmul(m, a, k, p, 0, n, bias, c, n);                // C[m, 0:n] = A[m, k] W^T + bias
//
// Why not sgemm: OpenBLAS re-packs W on every call and its AVX2 kernel ran at
// 67-80% of a Zen 3 core's FMA peak (~100 GFLOP/s) on a ViT's shapes (257
// token rows; k = 384 to 3072); with W packed at load and a 4 x 24 register
// tile, 78-87% (bench/README.md, "ViT encoders against PyTorch"). Where the packed kernel is
// not the faster one it is not used: packed_gemm_preferred() says whether to
// pack (the avx2 kernel level; OpenBLAS's own AVX-512 kernels are kept on
// avx512 CPUs where it runs them, and its SSE ones at the portable level).
//
// Layouts and tiles (packed_tile.h): panels of 24 columns, run by a 4 x 24
// tile of 256-bit vectors (avx2), or, packed at the avx512 level, of 32
// columns, run by a 12 x 32 tile of 512-bit vectors. A matrix runs at any
// level whatever its layout (a 32-column one without AVX-512: the same tile as
// two 256-bit halves per vector; portable: plain C++).
//
// Numerics: every output is bias + the k products summed in order k = 0, 1,
// ... with FMA, independent of m, of the row's position in A, of the column
// range, of the layout and of the tile: a row's result does not depend on the
// batch it came in, nor on whether the CPU has AVX-512. It differs from
// sgemm's (another summation order) by float rounding only, and at the
// portable level (no FMA: the product is rounded first) from the others.
// Thread safety: a PackedMatrix is read-only after pack_rows; pmatmul may run
// from several threads at once (each packs A's blocks into its own buffer).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aligned.h"
#include "cpu.h"

namespace vismem {

struct PackedMatrix {
  static constexpr int64_t kDepth = 384;  // k per block: a panel block (36 or 48 KB) stays in L1/L2 while A's rows pass
  int64_t n = 0, k = 0;
  int64_t cols = 24;        // panel width: 24 or 32 (pack_rows' argument; by default 32 at the avx512 level)
  AlignedVector<float> data;  // [k blocks][n/cols panels, n padded with zero rows][block depth][cols]
  bool empty() const { return n == 0; }
};

// True where the encoders pack their weights and run pmatmul, not sgemm: the
// avx2 level (measured faster); and avx512 where OpenBLAS runs no AVX-512
// kernels (a CPU it did not recognize gets its SSE3 "Prescott" ones: 24-30
// GFLOP/s against 74-86 for the 4 x 24 tile on one such Xeon; the 12 x 32
// tile that runs there now has not been timed yet). VISMEM_PACKED=1 or 0
// (read once) decides instead, to time one against the other.
bool packed_gemm_preferred();
// The rule itself, for a kernel level and an OpenBLAS core name (blas_core()).
bool packed_gemm_preferred_for(Isa isa, const std::string& blas_core);
// The panel width pack_rows picks at this kernel level: 32 at avx512, else 24.
int64_t packed_cols_for_cpu();

// Packs W [n, k] row-major (row j = output column j) into panels of `cols`
// columns (24 or 32; 0: packed_cols_for_cpu()). Throws on n or k <= 0 or
// another width.
PackedMatrix pack_rows(const float* w, int64_t n, int64_t k, int64_t cols = 0);
// Packs W[j, kk] = src[j * row_stride + kk * col_stride] * scale into out,
// reusing its memory: per call operands such as attention's keys (rows of a
// strided matrix, scale 1/sqrt(d) folded in) or values (transposed: row_stride 1).
void pack_strided(const float* src, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, float scale,
                  PackedMatrix& out, int64_t cols = 0);

// C[r, c] = bias[c] + sum_k A[r, k] W[c, k] for rows [0, m) and output columns
// [c0, c1) (any range in [0, w.n]; panels only partly in it run a masked tile). A is
// [m, w.k] with row stride lda, C has row stride ldc; bias ([w.n], absolute
// columns) may be null (zero). The tile is chosen by w's layout and
// cpu_isa() at each call (see above).
void pmatmul(int64_t m, const float* a, int64_t lda, const PackedMatrix& w, int64_t c0, int64_t c1,
             const float* bias, float* c, int64_t ldc);

}  // namespace vismem
