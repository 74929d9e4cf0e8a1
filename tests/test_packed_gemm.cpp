// pmatmul (weights packed once) against a double-precision product, at every
// kernel level this CPU runs, on shapes that leave partial panels, partial row
// tiles and several k blocks; column ranges that start and end inside panels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu.h"
#include "error.h"
#include "linalg.h"
#include "packed_gemm.h"
#include "util_test.h"

namespace {

struct IsaGuard {
  vismem::Isa saved = vismem::cpu_isa();
  ~IsaGuard() { vismem::set_isa(saved); }
};

using vismem::test::random_normal;

// Worst |C - ref| / (sum_k |a w| + 1e-30) over the computed columns; -1 if a
// column outside [c0, c1) was touched.
double worst_error(int64_t m, int64_t n, int64_t k, const std::vector<float>& a, int64_t lda,
                   const std::vector<float>& w, const float* bias, const std::vector<float>& c, int64_t ldc,
                   int64_t c0, int64_t c1, float sentinel) {
  double worst = 0;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const float got = c[r * ldc + j];
      if (j < c0 || j >= c1) {
        if (got != sentinel) return -1;
        continue;
      }
      double ref = bias ? bias[j] : 0.0, mag = bias ? std::fabs(bias[j]) : 0.0;
      for (int64_t kk = 0; kk < k; ++kk) {
        ref += double(a[r * lda + kk]) * w[j * k + kk];
        mag += std::fabs(double(a[r * lda + kk]) * w[j * k + kk]);
      }
      worst = std::max(worst, std::fabs(got - ref) / (mag + 1e-30));
    }
  return worst;
}

}  // namespace

TEST(PackedGemm, MatchesADoubleProductAtEveryLevel) {
  IsaGuard guard;
  struct Shape {
    int64_t m, n, k, c0, c1;
    bool bias;
  };
  // n = 257 and 64: attention's keys and values; k = 800 > PackedMatrix::kDepth;
  // m = 5, 257: partial row tiles; c0 = 30: starts inside a panel.
  const Shape shapes[] = {{1, 1, 1, 0, 1, true},       {3, 7, 5, 0, 7, false},      {4, 24, 64, 0, 24, true},
                          {5, 25, 384, 0, 25, true},   {257, 257, 64, 0, 257, false}, {257, 64, 257, 0, 64, false},
                          {9, 96, 800, 30, 77, true},  {330, 48, 385, 24, 48, true}, {7, 100, 3, 99, 100, false}};
  for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level)
    for (const int64_t cols : {24, 32}) {  // both layouts at every level (32 without AVX-512: the emulated tile)
      vismem::set_isa(vismem::Isa(level));
      for (const Shape& s : shapes) {
        const int64_t lda = s.k + 3, ldc = s.n + 5;
        const auto a = random_normal(size_t(s.m * lda), 1), w = random_normal(size_t(s.n * s.k), 2), b = random_normal(size_t(s.n), 3);
        const vismem::PackedMatrix p = vismem::pack_rows(w.data(), s.n, s.k, cols);
        const float sentinel = -7.25f;
        std::vector<float> c(size_t(s.m * ldc), sentinel);
        vismem::pmatmul(s.m, a.data(), lda, p, s.c0, s.c1, s.bias ? b.data() : nullptr, c.data(), ldc);
        const double e = worst_error(s.m, s.n, s.k, a, lda, w, s.bias ? b.data() : nullptr, c, ldc, s.c0, s.c1, sentinel);
        EXPECT_GE(e, 0) << "a column outside the range was written: " << s.m << "x" << s.n << "x" << s.k;
        // float32 sums of k products: relative to sum |a w|, within a few k * 2^-24
        EXPECT_LT(e, 4e-7 * std::sqrt(double(s.k)) + 1e-7)
            << vismem::isa_name(vismem::Isa(level)) << " cols " << cols << " " << s.m << "x" << s.n << "x" << s.k;
      }
    }
}

TEST(PackedGemm, EveryLayoutAndTileGivesTheSameFloats) {
  // Each output is bias + the k products in order, one FMA each, in every tile:
  // the 4 x 24 AVX2 tile on 24-column panels and the 12 x 32 tile on 32-column
  // ones give the same floats. Without AVX-512 the 12 x 32 tile runs as two
  // 256-bit halves per vector (its logic: masks, row counts 1..12, panels,
  // k blocks); on an AVX-512 CPU the avx512 level runs it on 512-bit vectors,
  // and both are compared with the AVX2 tile.
  IsaGuard guard;
  if (vismem::cpu_max_isa() < vismem::Isa::avx2) GTEST_SKIP() << "no AVX2 + FMA: only the plain tiles run here";
  vismem::set_isa(vismem::Isa::avx2);
  struct Shape {
    int64_t m, n, k, c0, c1;
  };
  // m: tiles of every row count (m rows are cut into tiles of sizes as even as
  // they go: 13 = 7 + 6, 25 = 9 + 8 + 8), and 330 > the 320 rows packed at a time;
  // n, c0, c1: panels cut at either end; k: tails and two or three k blocks.
  const Shape shapes[] = {{1, 1, 1, 0, 1},       {11, 17, 3, 0, 17},     {12, 32, 64, 0, 32},   {13, 33, 385, 0, 33},
                          {23, 64, 800, 5, 60},  {25, 257, 64, 0, 257},  {257, 64, 257, 0, 64}, {330, 48, 70, 17, 41},
                          {257, 96, 384, 0, 96}, {7, 100, 13, 99, 100}, {36, 40, 9, 0, 40},    {59, 31, 100, 2, 30},
                          {2, 40, 20, 0, 40},    {3, 33, 9, 1, 33},      {4, 24, 17, 0, 24},    {5, 50, 8, 0, 50},
                          {10, 65, 31, 0, 65},   {9, 8, 16, 0, 8},       {6, 70, 5, 3, 69},     {8, 32, 40, 0, 32}};
  for (const Shape& s : shapes) {
    const int64_t lda = s.k + 1, ldc = s.n + 3;
    const auto a = random_normal(size_t(s.m * lda), 11), w = random_normal(size_t(s.n * s.k), 12),
               b = random_normal(size_t(s.n), 13);
    const vismem::PackedMatrix p24 = vismem::pack_rows(w.data(), s.n, s.k, 24);
    const vismem::PackedMatrix p32 = vismem::pack_rows(w.data(), s.n, s.k, 32);
    for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
      std::vector<float> want(size_t(s.m * ldc), -3.5f);
      vismem::set_isa(vismem::Isa::avx2);
      vismem::pmatmul(s.m, a.data(), lda, p24, s.c0, s.c1, bias, want.data(), ldc);
      for (int level = int(vismem::Isa::avx2); level <= int(vismem::cpu_max_isa()); ++level) {
        vismem::set_isa(vismem::Isa(level));
        for (const vismem::PackedMatrix* p : {&p24, &p32}) {
          std::vector<float> got(size_t(s.m * ldc), -3.5f);
          vismem::pmatmul(s.m, a.data(), lda, *p, s.c0, s.c1, bias, got.data(), ldc);
          ASSERT_EQ(got, want) << vismem::isa_name(vismem::Isa(level)) << " cols " << p->cols << " " << s.m << "x"
                               << s.n << "x" << s.k << " [" << s.c0 << ", " << s.c1 << ")" << (bias ? " bias" : "");
        }
      }
    }
  }
  vismem::set_isa(vismem::cpu_max_isa());
  const std::vector<float> w4(4, 1.0f);
  EXPECT_EQ(vismem::pack_rows(w4.data(), 2, 2).cols, vismem::packed_cols_for_cpu());
  EXPECT_EQ(vismem::packed_cols_for_cpu(), vismem::cpu_isa() >= vismem::Isa::avx512 ? 32 : 24);
}

TEST(PackedGemm, ARowsResultDoesNotDependOnItsBatch) {
  // Every output is the same sequence of FMAs whatever m, the row's position
  // and the column range: bit-identical, which makes a ViT's embedding of an
  // image independent of the batch and of the thread split.
  const int64_t m = 11, n = 72, k = 450;
  const auto a = random_normal(size_t(m * k), 4), w = random_normal(size_t(n * k), 5), b = random_normal(size_t(n), 6);
  const vismem::PackedMatrix p = vismem::pack_rows(w.data(), n, k);
  std::vector<float> all(size_t(m * n));
  vismem::pmatmul(m, a.data(), k, p, 0, n, b.data(), all.data(), n);
  for (int64_t r = 0; r < m; ++r) {
    std::vector<float> one(static_cast<size_t>(n));
    vismem::pmatmul(1, a.data() + r * k, k, p, 0, 48, b.data(), one.data(), n);
    vismem::pmatmul(1, a.data() + r * k, k, p, 48, n, b.data(), one.data(), n);
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(one[j], all[r * n + j]) << r << "," << j;
  }
}

TEST(PackedGemm, StridedPackingTransposesAndScales) {
  // pack_strided from a transposed source (row_stride 1) with a scale equals
  // pack_rows of the explicitly transposed, scaled matrix.
  const int64_t n = 30, k = 41, ld = 50;
  const auto src = random_normal(size_t(k * ld), 7);  // [k, ld]: W[j, kk] = src[kk * ld + j]
  std::vector<float> wt(size_t(n * k));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; ++kk) wt[j * k + kk] = src[kk * ld + j] * 0.5f;
  vismem::PackedMatrix strided;
  vismem::pack_strided(src.data(), n, k, 1, ld, 0.5f, strided);
  EXPECT_EQ(strided.data, vismem::pack_rows(wt.data(), n, k).data);
  // Reuse: a smaller packing into the same matrix leaves no stale values behind.
  vismem::pack_strided(src.data(), 5, 3, 1, ld, 1.0f, strided);
  EXPECT_EQ(strided.n, 5);
  EXPECT_EQ(strided.k, 3);
  std::vector<float> w5(15);
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t kk = 0; kk < 3; ++kk) w5[j * 3 + kk] = src[kk * ld + j];
  EXPECT_EQ(strided.data, vismem::pack_rows(w5.data(), 5, 3).data);
}

TEST(PackedGemm, StridedRowsPackIntoTheDocumentedLayout) {
  // Rows of a wider matrix (col_stride 1: attention's keys in qkv; pack_rows),
  // against the layout written out element by element: [k blocks][panels]
  // [block depth][cols], zero past n. Both panel widths, partial panels, k
  // tails and two k blocks.
  const int64_t ld = 450, depth = vismem::PackedMatrix::kDepth;
  const auto src = random_normal(size_t(300 * ld), 8);
  for (const int64_t cols : {24, 32}) {
    for (const auto& [n, k] : {std::pair<int64_t, int64_t>{257, 64}, {7, 13}, {24, 8}, {33, 400}, {300, 1}}) {
      const int64_t np = (n + cols - 1) / cols * cols;
      vismem::AlignedVector<float> want(size_t(np * k), 0.0f);
      for (int64_t k0 = 0; k0 < k; k0 += depth) {
        const int64_t kc = std::min(depth, k - k0);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t kk = 0; kk < kc; ++kk)
            want[size_t(k0 * np + (j / cols) * kc * cols + kk * cols + j % cols)] = src[j * ld + k0 + kk] * 0.125f;
      }
      vismem::PackedMatrix strided;
      vismem::pack_strided(src.data(), n, k, ld, 1, 0.125f, strided, cols);
      EXPECT_EQ(strided.cols, cols);
      EXPECT_EQ(strided.data, want) << "cols " << cols << " " << n << "x" << k;
      // Panels start on a cache line: no 32- or 64-byte load of the tiles spans two.
      EXPECT_EQ(reinterpret_cast<uintptr_t>(strided.data.data()) % 64, 0u);
      std::vector<float> w(size_t(n * k));
      for (int64_t j = 0; j < n; ++j)
        for (int64_t kk = 0; kk < k; ++kk) w[j * k + kk] = src[j * ld + kk] * 0.125f;
      EXPECT_EQ(vismem::pack_rows(w.data(), n, k, cols).data, want) << "cols " << cols;
    }
  }
}

TEST(PackedGemm, BadArgumentsAreRefused) {
  const std::vector<float> w(12, 1.0f), a(8, 1.0f);
  EXPECT_THROW(vismem::pack_rows(w.data(), 0, 3), vismem::Error);
  EXPECT_THROW(vismem::pack_rows(w.data(), 4, -1), vismem::Error);
  EXPECT_THROW(vismem::pack_rows(w.data(), 4, 3, 16), vismem::Error);
  const vismem::PackedMatrix p = vismem::pack_rows(w.data(), 4, 3);
  std::vector<float> c(8);
  EXPECT_THROW(vismem::pmatmul(2, a.data(), 3, p, 2, 5, nullptr, c.data(), 4), vismem::Error);
  EXPECT_THROW(vismem::pmatmul(2, a.data(), 3, p, 3, 2, nullptr, c.data(), 4), vismem::Error);
  EXPECT_THROW(vismem::pmatmul(2, a.data(), 3, vismem::PackedMatrix{}, 0, 0, nullptr, c.data(), 4), vismem::Error);
  vismem::pmatmul(2, a.data(), 3, p, 0, 4, nullptr, c.data(), 4);
  for (float x : c) EXPECT_EQ(x, 3.0f);
}

TEST(PackedGemm, PackedWhereItIsTheFasterProduct) {
  using vismem::Isa;
  using vismem::packed_gemm_preferred_for;
  EXPECT_TRUE(packed_gemm_preferred_for(Isa::avx2, "Zen"));
  EXPECT_TRUE(packed_gemm_preferred_for(Isa::avx2, "SkylakeX"));  // VISMEM_ISA=avx2 on an AVX-512 CPU
  // AVX-512: OpenBLAS's own AVX-512 sgemm where it runs it; else (a CPU it
  // did not recognize: Prescott, SSE3) the packed tile.
  EXPECT_FALSE(packed_gemm_preferred_for(Isa::avx512, "SkylakeX"));
  EXPECT_FALSE(packed_gemm_preferred_for(Isa::avx512, "COOPERLAKE"));
  EXPECT_FALSE(packed_gemm_preferred_for(Isa::avx512, "SapphireRapids"));
  EXPECT_TRUE(packed_gemm_preferred_for(Isa::avx512, "Prescott"));
  EXPECT_TRUE(packed_gemm_preferred_for(Isa::avx512, "Haswell"));
  EXPECT_FALSE(packed_gemm_preferred_for(Isa::portable, "Prescott"));
  if (std::getenv("VISMEM_PACKED") == nullptr) {  // else the environment decides (VismemPackedDecidesWhereSet)
    EXPECT_EQ(vismem::packed_gemm_preferred(), packed_gemm_preferred_for(vismem::cpu_isa(), vismem::blas_core()));
  }
}

TEST(PackedGemm, VismemPackedDecidesWhereSet) {
  // Read once per process: each case in a fresh one (threadsafe death tests re-run the binary).
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto preferred_with = [](const char* value) {
    setenv("VISMEM_PACKED", value, 1);
    std::exit(vismem::packed_gemm_preferred() ? 10 : 20);
  };
  EXPECT_EXIT(preferred_with("1"), testing::ExitedWithCode(10), "");
  EXPECT_EXIT(preferred_with("0"), testing::ExitedWithCode(20), "");
  const int rule = vismem::packed_gemm_preferred_for(vismem::cpu_isa(), vismem::blas_core()) ? 10 : 20;
  EXPECT_EXIT(preferred_with("yes"), testing::ExitedWithCode(rule), "VISMEM_PACKED=yes ignored");
}
