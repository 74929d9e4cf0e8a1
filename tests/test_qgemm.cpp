// The int8 matrix product (qgemm.h) against the float one, at every ISA level
// this CPU runs, on sizes that exercise the row, column and k tails.
#include "qgemm.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cpu.h"
#include "error.h"
#include "linalg.h"
#include "util_test.h"

namespace {

using vismem::test::random_normal;

struct IsaGuard {
  vismem::Isa saved = vismem::cpu_isa();
  ~IsaGuard() { vismem::set_isa(saved); }
};

}  // namespace

TEST(Qgemm, CloseToTheFloatProductAndEqualAcrossLevels) {
  IsaGuard guard;
  for (auto [m, n, k] : {std::array<int64_t, 3>{7, 29, 37}, {130, 48, 384}, {1, 16, 4}, {5, 1, 3}}) {
    const std::vector<float> a = random_normal(size_t(m * k), 1), w = random_normal(size_t(n * k), 2);
    std::vector<float> ref(size_t(m * n));
    vismem::matmul(m, n, k, a.data(), k, w.data(), k, ref.data(), n, true);
    const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);
    std::vector<std::vector<float>> outs;
    for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
      vismem::set_isa(vismem::Isa(level));
      std::vector<float> c(size_t(m * n), -7.0f);
      vismem::qmatmul(m, a.data(), k, q, 0, n, c.data(), n);
      double err = 0, top = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        err = std::max(err, std::fabs(double(c[i]) - ref[i]));
        top = std::max(top, std::fabs(double(ref[i])));
      }
      std::printf("%ldx%ldx%ld %s: max abs err %.3g of max |C| %.3g\n", long(m), long(n), long(k),
                  vismem::isa_name(vismem::Isa(level)), err, top);
      EXPECT_LT(err, 0.03 * top) << m << "x" << n << "x" << k;
      outs.push_back(c);
    }
    for (size_t l = 1; l < outs.size(); ++l) EXPECT_EQ(outs[l], outs[0]);  // int32 sums: exact at every level
  }
}

TEST(Qgemm, ColumnRangeWritesOnlyItsColumns) {
  const int64_t m = 9, n = 40, k = 20;
  const std::vector<float> a = random_normal(size_t(m * k), 3), w = random_normal(size_t(n * k), 4);
  const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);
  std::vector<float> all(size_t(m * n)), part(size_t(m * n), 0.0f);
  vismem::qmatmul(m, a.data(), k, q, 0, n, all.data(), n);
  vismem::qmatmul(m, a.data(), k, q, 8, 27, part.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      EXPECT_EQ(part[i * n + j], j >= 8 && j < 27 ? all[i * n + j] : 0.0f) << i << "," << j;
  // A range may start and end inside an 8-column block, at every level.
  IsaGuard guard;
  for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
    vismem::set_isa(vismem::Isa(level));
    std::vector<float> mid(size_t(m * n), -5.0f);
    vismem::qmatmul(m, a.data(), k, q, 3, 21, mid.data(), n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        EXPECT_EQ(mid[i * n + j], j >= 3 && j < 21 ? all[i * n + j] : -5.0f) << vismem::isa_name(vismem::Isa(level));
  }
  EXPECT_THROW(vismem::qmatmul(m, a.data(), k, q, -1, 10, part.data(), n), vismem::Error);
  EXPECT_THROW(vismem::qmatmul(m, a.data(), k, q, 0, n + 1, part.data(), n), vismem::Error);
  EXPECT_THROW(vismem::quantize_rows(w.data(), 0, k), vismem::Error);
  // A zero row quantizes to zero, not to NaN.
  std::vector<float> zero(size_t(k), 0.0f), out(size_t(n), 1.0f);
  vismem::qmatmul(1, zero.data(), k, q, 0, n, out.data(), n);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

// The fused epilogue (bias, then clamp) equals the plain product plus the bias,
// clamped, and is the same float at every level.
TEST(Qgemm, EpilogueAddsBiasThenClamps) {
  IsaGuard guard;
  const int64_t m = 11, n = 37, k = 45;
  const std::vector<float> a = random_normal(size_t(m * k), 5), w = random_normal(size_t(n * k), 6), bias = random_normal(size_t(n), 7);
  const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);
  std::vector<std::vector<float>> outs;
  for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
    vismem::set_isa(vismem::Isa(level));
    std::vector<float> plain(size_t(m * n)), fused(size_t(m * n), -9.0f);
    vismem::qmatmul(m, a.data(), k, q, 0, n, plain.data(), n);
    vismem::QuantEpilogue epi;
    epi.bias = bias.data();
    epi.lo = 0.0f;
    epi.hi = 6.0f;
    vismem::qmatmul(m, a.data(), k, q, 8, n, fused.data(), n, epi);  // columns [8, n): a tail block
    int clamped = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const float want = j < 8 ? -9.0f : std::min(std::max(plain[i * n + j] + bias[j], 0.0f), 6.0f);
        EXPECT_EQ(fused[i * n + j], want) << vismem::isa_name(vismem::Isa(level)) << " " << i << "," << j;
        clamped += j >= 8 && (want == 0.0f || want == 6.0f);
      }
    EXPECT_GT(clamped, 10);  // the clamp was exercised on both ends' side
    outs.push_back(fused);
  }
  for (size_t l = 1; l < outs.size(); ++l) EXPECT_EQ(outs[l], outs[0]);
}

// Weights that are integer multiples of a grid (a uint8 model's (q - zp) * scale)
// are kept exactly when the multiples fit in [-127, 127]: the product then
// equals the float one up to the activations' rounding alone; other rows fall
// back to their own max / 127 (the same as without a grid).
TEST(Qgemm, WeightsOnAGridStayExact) {
  const int64_t n = 16, k = 64;
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<float> w(static_cast<size_t>(n * k)), grid(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    grid[j] = 0.01f * float(j + 1);
    const int reach = j == 3 ? 2 : 1;  // row 3's codes run to +-254: not representable
    for (int64_t i = 0; i < k; ++i) w[j * k + i] = float(code(rng) * reach) * grid[j];
  }
  const vismem::QuantizedMatrix exact = vismem::quantize_rows(w.data(), n, k, grid.data());
  for (int64_t j = 0; j < n; ++j) {
    if (j == 3) {
      EXPECT_NE(exact.scale[j], grid[j]);
      continue;
    }
    EXPECT_EQ(exact.scale[j], grid[j]) << j;
  }
  // Uniform codes: many adjacent pairs past 128, so 7-bit activations (below).
  ASSERT_EQ(exact.act_levels, 127);
  // One activation row that 7 bits hold exactly (integers 0..127): the product is exact.
  std::vector<float> a(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) a[i] = float(i * 2 % 128);
  a[0] = 127.0f;  // range [0, 127]: the activation scale is exactly 1
  std::vector<float> c(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
  vismem::qmatmul(1, a.data(), k, exact, 0, n, c.data(), n);
  vismem::matmul(1, n, k, a.data(), k, w.data(), k, ref.data(), n, true);
  for (int64_t j = 0; j < n; ++j) {
    if (j == 3) continue;
    EXPECT_NEAR(c[j], ref[j], 1e-4 * std::fabs(ref[j]) + 1e-4) << j;
  }
}

// A uint8 model's weights: small codes but for a few adjacent pairs whose |q|
// sum passes 128. They move their excess to extension slots, so activations get
// 8 bits, and the product stays exact (activations that 8 bits hold exactly,
// integers 0..255, give the integer product) at every level, even with every
// activation at 255 on the large pairs: vpmaddubsw's int16 pair sums do not
// saturate. Weights with many large pairs keep 7-bit activations.
TEST(Qgemm, EightBitActivationsWhereThePairsAllowExactly) {
  IsaGuard guard;
  for (int64_t k : {64, 37, 2}) {
    const int64_t n = 20, m = 6;
    std::mt19937 rng(uint32_t(9 + k));
    std::uniform_int_distribution<int> small(-60, 60), big(100, 127);
    std::vector<int> codes(size_t(n * k));
    for (int& c : codes) c = small(rng);
    // Large pairs in rows 2, 5, 19, some with both signs, one in the last pair of k.
    for (auto [row, col] : {std::array<int64_t, 2>{2, 0}, {5, 0}, {5, 10 % k}, {19, (k - 2) / 2 * 2}}) {
      codes[size_t(row * k + col)] = big(rng);
      codes[size_t(row * k + col + 1)] = row == 5 ? -big(rng) : 127;
    }
    std::vector<float> w(codes.size()), grid(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      grid[j] = 0.02f * float(j + 1);
      codes[size_t(j * k)] = j == 2 || j == 5 ? codes[size_t(j * k)] : 127;  // every row reaches 127: the grid is its scale
      for (int64_t i = 0; i < k; ++i) w[size_t(j * k + i)] = float(codes[size_t(j * k + i)]) * grid[j];
    }
    const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k, grid.data());
    EXPECT_EQ(q.act_levels, 255) << k;
    EXPECT_FALSE(q.ext_src.empty()) << k;
    EXPECT_EQ(q.kp % 4, 0);
    EXPECT_GE(q.kp, q.kp_main() + int64_t(q.ext_src.size()));
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(q.scale[j], grid[j]) << j;
    // Rows of integers in [0, 255] with 0 and 255 present: scale 1, zero point 0.
    std::vector<float> a(size_t(m * k));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k; ++i) a[size_t(r * k + i)] = float(r == 0 ? 255 : (i * 37 + r * 11) % 256);
    for (int64_t r = 1; r < m; ++r) a[size_t(r * k)] = 255.0f, a[size_t(r * k + k - 1)] = 0.0f;
    std::vector<std::vector<float>> outs;
    for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
      vismem::set_isa(vismem::Isa(level));
      std::vector<float> c(size_t(m * n), -1.0f);
      vismem::qmatmul(m, a.data(), k, q, 0, n, c.data(), n);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < n; ++j) {
          int64_t dot = 0;
          for (int64_t i = 0; i < k; ++i) dot += int64_t(a[size_t(r * k + i)]) * codes[size_t(j * k + i)];
          const double want = double(dot) * grid[j];
          EXPECT_NEAR(c[size_t(r * n + j)], want, 1e-6 * std::fabs(want) + 1e-6)
              << vismem::isa_name(vismem::Isa(level)) << " k=" << k << " " << r << "," << j;
        }
      outs.push_back(c);
    }
    for (size_t l = 1; l < outs.size(); ++l) EXPECT_EQ(outs[l], outs[0]);
  }
  // Gaussian weights on their own per-row grid: large pairs everywhere, 7 bits.
  const int64_t n = 32, k = 96;
  const std::vector<float> w = random_normal(size_t(n * k), 10);
  const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);
  EXPECT_EQ(q.act_levels, 127);
  EXPECT_TRUE(q.ext_src.empty());
  EXPECT_EQ(q.kp, k);
}

// 8-bit activations halve the activations' rounding step: on the same weights
// the product is closer to the float one than with 7 bits.
TEST(Qgemm, EightBitActivationsAreCloserThanSeven) {
  const int64_t m = 64, n = 48, k = 256;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-64, 64);
  std::vector<float> w(static_cast<size_t>(n * k)), grid(static_cast<size_t>(n), 0.01f);
  for (float& v : w) v = float(small(rng)) * 0.01f;
  const std::vector<float> a = random_normal(size_t(m * k), 12);
  std::vector<float> ref(size_t(m * n)), c8(size_t(m * n));
  vismem::matmul(m, n, k, a.data(), k, w.data(), k, ref.data(), n, true);
  vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k, grid.data());
  ASSERT_EQ(q.act_levels, 255);
  vismem::qmatmul(m, a.data(), k, q, 0, n, c8.data(), n);
  q.act_levels = 127;  // the same weights with 7-bit activations (their pairs are within 128 anyway)
  std::vector<float> c7(size_t(m * n));
  vismem::qmatmul(m, a.data(), k, q, 0, n, c7.data(), n);
  double e7 = 0, e8 = 0;
  for (size_t i = 0; i < ref.size(); ++i) e7 += std::pow(c7[i] - ref[i], 2), e8 += std::pow(c8[i] - ref[i], 2);
  std::printf("rms error, 7-bit activations %.4g, 8-bit %.4g\n", std::sqrt(e7 / ref.size()), std::sqrt(e8 / ref.size()));
  EXPECT_LT(e8, 0.4 * e7);  // about a quarter: half the step
}

// Rows no float product would lose: a NaN or an infinity gives NaN outputs
// (so that an encoder's output check refuses them, as in float32), even
// through a clamp; values past FLT_MAX / 2 keep their sign and size; a range
// below ~1e-36 is zero (the bias alone); a weight that is NaN is an error.
// Every level agrees.
TEST(Qgemm, ExtremeRowsAtEveryLevel) {
  IsaGuard guard;
  const int64_t n = 8, k = 4;
  const std::vector<float> w(size_t(n * k), 1.0f);
  const vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<std::vector<float>> rows = {
      {nan, 1, 2, 3}, {inf, 1, 0, 0}, {-inf, 1, 0, 0}, {2e38f, -2e38f, 3e38f, 0}, {1e-38f, 0, 0, 0}, {1, 2, 3, 4}};
  for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
    vismem::set_isa(vismem::Isa(level));
    for (bool clamp : {false, true}) {
      vismem::QuantEpilogue epi;
      const std::vector<float> bias(size_t(n), 0.5f);
      epi.bias = bias.data();
      if (clamp) epi.lo = 0.0f, epi.hi = 6.0f;
      std::vector<float> c(rows.size() * n);
      for (size_t r = 0; r < rows.size(); ++r) vismem::qmatmul(1, rows[r].data(), k, q, 0, n, c.data() + r * n, n, epi);
      const char* at = vismem::isa_name(vismem::Isa(level));
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_TRUE(std::isnan(c[0 * n + j])) << at << " NaN row, clamp " << clamp;
        EXPECT_TRUE(std::isnan(c[1 * n + j])) << at << " +inf row, clamp " << clamp;
        EXPECT_TRUE(std::isnan(c[2 * n + j])) << at << " -inf row, clamp " << clamp;
        if (clamp) {
          EXPECT_EQ(c[3 * n + j], 6.0f) << at;
        } else {
          EXPECT_NEAR(c[3 * n + j] / 3e38f, 1.0f, 0.02f) << at << " " << c[3 * n + j];
        }
        EXPECT_EQ(c[4 * n + j], 0.5f) << at;  // the bias alone
        EXPECT_NEAR(c[5 * n + j], clamp ? 6.0f : 10.5f, 0.05f) << at;
      }
    }
  }
  std::vector<float> bad = w;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(vismem::quantize_rows(bad.data(), n, k), vismem::Error);
  // A row of weights below 127 * FLT_MIN quantizes to zero, not to an overflow.
  std::vector<float> tiny(static_cast<size_t>(n * k), 1e-37f), a(static_cast<size_t>(k), 1e30f), c(static_cast<size_t>(n));
  const vismem::QuantizedMatrix qt = vismem::quantize_rows(tiny.data(), n, k);
  vismem::qmatmul(1, a.data(), k, qt, 0, n, c.data(), n);
  for (float v : c) EXPECT_EQ(v, 0.0f);
}
