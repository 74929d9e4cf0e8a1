// Tests of FlatIndex against a brute-force oracle.
//
// The oracle scores every (query, item) pair with a from-scratch scalar
// implementation of the documented distance (16 FMA lanes + pairwise tree),
// sorts by (distance, key) and pads; results must match bit for bit. That
// reference is itself checked against double precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cpu.h"
#include "error.h"
#include "flat_index.h"
#include "linalg.h"

namespace {

using vismem::FlatIndex;

// The definition in flat_index.h, written independently of the library.
float reference_distance(const float* q, const float* x, int d) {
  float acc[16] = {};
  for (int j = 0; j < d; j += 16)
    for (int l = 0; l < 16; ++l) {
      float a = j + l < d ? q[j + l] : 0.0f, b = j + l < d ? x[j + l] : 0.0f;
      acc[l] = std::fma(a, b, acc[l]);
    }
  float s8[8], s4[4];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  float dot = (s4[0] + s4[2]) + (s4[1] + s4[3]);
  return 1.0f - dot;
}

std::vector<float> random_unit(int64_t n, int d, std::mt19937_64& rng) {
  std::normal_distribution<float> g;
  std::vector<float> x(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) {
      float v = g(rng);
      x[i * d + j] = v;
      s += double(v) * v;
    }
    float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (int j = 0; j < d; ++j) x[i * d + j] *= inv;
  }
  return x;
}

struct Result {
  std::vector<float> dist;
  std::vector<int64_t> key;
  bool operator==(const Result& o) const {
    // Bitwise on distances (+inf padding compares fine with memcmp too).
    return key == o.key && dist.size() == o.dist.size() &&
           std::memcmp(dist.data(), o.dist.data(), dist.size() * sizeof(float)) == 0;
  }
};

Result run(const vismem::Index& idx, const std::vector<float>& q, int k, int threads = 0) {
  int64_t nq = static_cast<int64_t>(q.size()) / idx.dim();
  Result r{std::vector<float>(static_cast<size_t>(nq * k)), std::vector<int64_t>(static_cast<size_t>(nq * k))};
  idx.search(nq, q.data(), k, r.dist.data(), r.key.data(), threads);
  return r;
}

// Brute force over (vectors, keys) in whatever order they are given.
Result oracle(const std::vector<float>& x, const std::vector<int64_t>& keys, int d, const std::vector<float>& q,
              int k) {
  int64_t n = static_cast<int64_t>(keys.size()), nq = static_cast<int64_t>(q.size()) / d;
  Result r;
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<float, int64_t>> all;
    for (int64_t j = 0; j < n; ++j) all.push_back({reference_distance(&q[i * d], &x[j * d], d), keys[j]});
    std::sort(all.begin(), all.end());
    for (int j = 0; j < k; ++j) {
      r.dist.push_back(j < n ? all[j].first : std::numeric_limits<float>::infinity());
      r.key.push_back(j < n ? all[j].second : -1);
    }
  }
  return r;
}

std::vector<int64_t> shuffled_keys(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> keys(static_cast<size_t>(n));
  std::iota(keys.begin(), keys.end(), 1000);
  std::shuffle(keys.begin(), keys.end(), rng);
  return keys;
}

TEST(FlatIndexDistance, MatchesDefinitionAndDoublePrecision) {
  std::mt19937_64 rng(1);
  for (int d : {1, 5, 15, 16, 17, 100, 384, 1000}) {
    auto x = random_unit(50, d, rng);
    for (int i = 0; i + 1 < 50; ++i) {
      const float* a = &x[i * d];
      const float* b = &x[(i + 1) * d];
      float got = FlatIndex::distance(a, b, d);
      float ref = reference_distance(a, b, d);
      EXPECT_EQ(std::memcmp(&got, &ref, sizeof(float)), 0) << "d=" << d;
      double exact = 1.0;
      for (int j = 0; j < d; ++j) exact -= double(a[j]) * b[j];
      EXPECT_NEAR(got, exact, 1e-6) << "d=" << d;
    }
  }
}

struct Case {
  int64_t n;
  int d, k;
  int64_t nq;
  int threads;
};

// Every storage and scan: they must all return the oracle's bits.
const std::vector<FlatIndex::Options> kVariants = {
    {FlatIndex::Storage::f32, FlatIndex::Scan::automatic}, {FlatIndex::Storage::f32, FlatIndex::Scan::kernel},
    {FlatIndex::Storage::f32, FlatIndex::Scan::blas},      {FlatIndex::Storage::f16, FlatIndex::Scan::automatic},
    {FlatIndex::Storage::f16, FlatIndex::Scan::kernel},    {FlatIndex::Storage::f16, FlatIndex::Scan::blas},
};

std::string name(const FlatIndex::Options& o) {
  const char* scan[] = {"automatic", "kernel", "blas"};
  return std::string(o.storage == FlatIndex::Storage::f16 ? "f16/" : "f32/") + scan[static_cast<int>(o.scan)];
}

void check_cases(const std::vector<Case>& cases) {
  std::mt19937_64 rng(7);
  for (const Case& c : cases) {
    auto x = random_unit(c.n, c.d, rng);
    auto keys = shuffled_keys(c.n, rng);
    auto q = random_unit(c.nq, c.d, rng);
    Result expect = oracle(x, keys, c.d, q, c.k);
    for (const auto& opt : kVariants) {
      SCOPED_TRACE(testing::Message() << name(opt) << " n=" << c.n << " d=" << c.d << " k=" << c.k
                                      << " nq=" << c.nq << " threads=" << c.threads);
      FlatIndex idx(c.d, opt);
      // Two adds: exercises appending.
      int64_t half = c.n / 2;
      idx.add(half, x.data(), keys.data());
      idx.add(c.n - half, x.data() + half * c.d, keys.data() + half);
      EXPECT_EQ(idx.size(), c.n);
      EXPECT_TRUE(run(idx, q, c.k, c.threads) == expect);
    }
  }
}

// Batch sizes across the scan's query groups and chunks and sgemm's row blocks
// and query chunks; k above and below n; odd d (padding); 1-3 threads.
const std::vector<Case> kCases = {
    {1, 8, 1, 1, 1},        {7, 3, 10, 2, 2},       {100, 16, 5, 1, 1},     {100, 33, 100, 9, 2},
    {1500, 64, 10, 1, 2},   {1500, 64, 10, 8, 3},   {1500, 64, 10, 40, 2},  {2500, 17, 100, 300, 2},
    {3000, 128, 1, 5, 1},   {3000, 128, 50, 64, 0}, {5000, 48, 20, 260, 3}, {40, 100, 64, 700, 2},
    {50, 8, 3, 5000, 2},  // more queries than one internal pass takes (4096)
};

TEST(FlatIndex, MatchesBruteForce) { check_cases(kCases); }

// Near-duplicates: exact distances a few ulps apart, where sgemm's and the
// float16 copy's rounding reorder items; the rescoring margin must recover
// the exact order.
TEST(FlatIndex, NearTiesMatchOracle) {
  std::mt19937_64 rng(29);
  const int d = 256, k = 40;
  const int64_t n = 3000;
  auto base = random_unit(1, d, rng);
  std::normal_distribution<float> g;
  std::vector<float> x(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) x[i * d + j] = base[j] + 3e-7f * g(rng);
  auto keys = shuffled_keys(n, rng);
  std::vector<float> q;
  for (int i = 0; i < 24; ++i)
    for (int j = 0; j < d; ++j) q.push_back(base[j] + 1e-6f * g(rng));
  for (int64_t nq : {1, 3, 24}) {
    std::vector<float> qs(q.begin(), q.begin() + nq * d);
    Result expect = oracle(x, keys, d, qs, k);
    for (const auto& opt : kVariants) {
      FlatIndex idx(d, opt);
      idx.add(n, x.data(), keys.data());
      EXPECT_TRUE(run(idx, qs, k, 2) == expect) << name(opt) << " nq=" << nq;
    }
  }
}

TEST(FlatIndex, BatchSizeAndThreadsDoNotChangeResults) {
  std::mt19937_64 rng(3);
  const int d = 96, k = 25;
  const int64_t n = 4000, nq = 100;
  auto x = random_unit(n, d, rng);
  auto keys = shuffled_keys(n, rng);
  auto q = random_unit(nq, d, rng);
  const int blas_before = vismem::blas_threads();
  Result expect = oracle(x, keys, d, q, k);
  for (int blas : {1, 2})
    for (const auto& opt : kVariants) {
    SCOPED_TRACE(testing::Message() << name(opt) << ", blas threads " << blas);
    // Single- and multi-threaded BLAS take different worker plans (flat_index.h).
    vismem::set_blas_threads(blas);
    FlatIndex idx(d, opt);
    idx.add(n, x.data(), keys.data());
    Result batch = run(idx, q, k, 2);
    EXPECT_TRUE(batch == expect);
    Result single;
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<float> qi(q.begin() + i * d, q.begin() + (i + 1) * d);
      Result r = run(idx, qi, k, 1);
      single.dist.insert(single.dist.end(), r.dist.begin(), r.dist.end());
      single.key.insert(single.key.end(), r.key.begin(), r.key.end());
    }
    EXPECT_TRUE(batch == single);
    // Batches of 7 (scan path) and the whole batch on one thread.
    Result sevens;
    for (int64_t i = 0; i < nq; i += 7) {
      int64_t m = std::min<int64_t>(7, nq - i);
      std::vector<float> qi(q.begin() + i * d, q.begin() + (i + m) * d);
      Result r = run(idx, qi, k, 3);
      sevens.dist.insert(sevens.dist.end(), r.dist.begin(), r.dist.end());
      sevens.key.insert(sevens.key.end(), r.key.begin(), r.key.end());
    }
    EXPECT_TRUE(batch == sevens);
    EXPECT_TRUE(batch == run(idx, q, k, 1));
  }
  vismem::set_blas_threads(blas_before);
}

TEST(FlatIndex, RemoveEqualsNeverAdded) {
  std::mt19937_64 rng(5);
  const int d = 72, k = 30;
  const int64_t n = 3000;
  auto x = random_unit(n, d, rng);
  auto keys = shuffled_keys(n, rng);
  auto q = random_unit(100, d, rng);
  for (const auto& opt : kVariants) {
    SCOPED_TRACE(name(opt));
    FlatIndex full(d, opt);
    full.add(n, x.data(), keys.data());
    // Remove a random half, in random order, in two calls.
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<int64_t> dead, live_rows(order.begin() + n / 2, order.end());
    for (int64_t i = 0; i < n / 2; ++i) dead.push_back(keys[order[i]]);
    EXPECT_EQ(full.remove(n / 4, dead.data()), n / 4);
    EXPECT_EQ(full.remove(n / 2 - n / 4, dead.data() + n / 4), n / 2 - n / 4);
    EXPECT_EQ(full.size(), n - n / 2);
    // The survivors, added to a fresh index in another order.
    std::sort(live_rows.begin(), live_rows.end());
    std::vector<float> lx;
    std::vector<int64_t> lk;
    for (int64_t r : live_rows) {
      lx.insert(lx.end(), x.begin() + r * d, x.begin() + (r + 1) * d);
      lk.push_back(keys[r]);
    }
    FlatIndex fresh(d, opt);
    fresh.add(static_cast<int64_t>(lk.size()), lx.data(), lk.data());
    for (int64_t nq : {1, 5, 100}) {
      std::vector<float> qs(q.begin(), q.begin() + nq * d);
      Result a = run(full, qs, k), b = run(fresh, qs, k);
      EXPECT_TRUE(a == b) << "nq=" << nq;
      EXPECT_TRUE(a == oracle(lx, lk, d, qs, k)) << "nq=" << nq;
    }
    // reconstruct follows the moved rows; removed keys are gone.
    std::vector<float> out(d);
    for (size_t i = 0; i < lk.size(); i += 97) {
      ASSERT_TRUE(full.reconstruct(lk[i], out.data()));
      EXPECT_TRUE(std::equal(out.begin(), out.end(), lx.begin() + i * d));
    }
    for (size_t i = 0; i < dead.size(); i += 101) EXPECT_FALSE(full.reconstruct(dead[i], out.data()));
  }
}

TEST(FlatIndex, TiesOrderedByKey) {
  std::mt19937_64 rng(11);
  const int d = 40;
  // 60 copies of one vector and 60 of another, keys interleaved and shuffled.
  auto base = random_unit(2, d, rng);
  std::vector<float> x;
  std::vector<int64_t> keys;
  for (int i = 0; i < 120; ++i) {
    x.insert(x.end(), base.begin() + (i % 2) * d, base.begin() + (i % 2 + 1) * d);
    keys.push_back(i);
  }
  std::vector<int64_t> perm(120);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<float> px;
  std::vector<int64_t> pk;
  for (int64_t p : perm) {
    px.insert(px.end(), x.begin() + p * d, x.begin() + (p + 1) * d);
    pk.push_back(keys[p]);
  }
  for (const auto& opt : kVariants) {
    SCOPED_TRACE(name(opt));
    FlatIndex idx(d, opt);
    idx.add(120, px.data(), pk.data());
    // Query = first vector: its 60 copies (even keys) in key order, then the odd ones.
    std::vector<float> q(base.begin(), base.begin() + d);
    q.insert(q.end(), q.begin(), q.end());  // nq = 2
    for (int64_t nq : {1, 2}) {
      std::vector<float> qs(q.begin(), q.begin() + nq * d);
      for (int k : {10, 60, 70}) {
        Result r = run(idx, qs, k);
        for (int j = 0; j < k; ++j) EXPECT_EQ(r.key[j], j < 60 ? 2 * j : 2 * (j - 60) + 1);
        EXPECT_TRUE(r == oracle(px, pk, d, qs, k));
      }
    }
    // Many more queries so the sgemm path runs too.
    std::vector<float> many;
    for (int i = 0; i < 30; ++i) many.insert(many.end(), base.begin(), base.begin() + d);
    Result r = run(idx, many, 10);
    for (int i = 0; i < 30; ++i)
      for (int j = 0; j < 10; ++j) EXPECT_EQ(r.key[i * 10 + j], 2 * j);
  }
}

TEST(FlatIndex, KLargerThanSizePads) {
  std::mt19937_64 rng(13);
  const int d = 20;
  auto x = random_unit(5, d, rng);
  std::vector<int64_t> keys = {4, 3, 2, 1, 0};
  FlatIndex idx(d);
  auto q = random_unit(12, d, rng);
  // Empty index: all padding.
  Result empty = run(idx, q, 3);
  for (size_t i = 0; i < empty.key.size(); ++i) {
    EXPECT_EQ(empty.key[i], -1);
    EXPECT_EQ(empty.dist[i], std::numeric_limits<float>::infinity());
  }
  idx.add(5, x.data(), keys.data());
  Result r = run(idx, q, 8);
  EXPECT_TRUE(r == oracle(x, keys, d, q, 8));
  for (int i = 0; i < 12; ++i)
    for (int j = 5; j < 8; ++j) {
      EXPECT_EQ(r.key[i * 8 + j], -1);
      EXPECT_EQ(r.dist[i * 8 + j], std::numeric_limits<float>::infinity());
    }
}

TEST(FlatIndex, RemoveUnknownKeysIgnored) {
  std::mt19937_64 rng(17);
  const int d = 8;
  auto x = random_unit(10, d, rng);
  std::vector<int64_t> keys(10);
  std::iota(keys.begin(), keys.end(), 0);
  FlatIndex idx(d);
  idx.add(10, x.data(), keys.data());
  std::vector<int64_t> rm = {42, 3, 3, -1, 9, 1000};
  EXPECT_EQ(idx.remove(static_cast<int64_t>(rm.size()), rm.data()), 2);
  EXPECT_EQ(idx.size(), 8);
  EXPECT_EQ(idx.remove(0, nullptr), 0);
  // A removed key can be added again.
  idx.add(1, x.data() + 3 * d, &keys[3]);
  EXPECT_EQ(idx.size(), 9);
  std::vector<float> out(d);
  ASSERT_TRUE(idx.reconstruct(3, out.data()));
  EXPECT_TRUE(std::equal(out.begin(), out.end(), x.begin() + 3 * d));
}

TEST(FlatIndex, BadInputThrowsAndLeavesIndexUnchanged) {
  std::mt19937_64 rng(19);
  const int d = 12;
  auto x = random_unit(6, d, rng);
  std::vector<int64_t> keys = {0, 1, 2, 3, 4, 5};
  FlatIndex idx(d, {FlatIndex::Storage::f16});
  idx.add(3, x.data(), keys.data());
  auto q = random_unit(4, d, rng);
  Result before = run(idx, q, 5);

  std::vector<int64_t> dup_in_batch = {3, 4, 3};
  EXPECT_THROW(idx.add(3, x.data() + 3 * d, dup_in_batch.data()), vismem::Error);
  std::vector<int64_t> dup_existing = {3, 1, 5};
  EXPECT_THROW(idx.add(3, x.data() + 3 * d, dup_existing.data()), vismem::Error);
  std::vector<int64_t> negative = {3, -1, 5};
  EXPECT_THROW(idx.add(3, x.data() + 3 * d, negative.data()), vismem::Error);
  std::vector<float> bad(x.begin() + 3 * d, x.end());
  bad[d + 4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(idx.add(3, bad.data(), keys.data() + 3), vismem::Error);
  bad[d + 4] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(idx.add(3, bad.data(), keys.data() + 3), vismem::Error);
  bad[d + 4] = 70000.0f;  // beyond float16
  EXPECT_THROW(idx.add(3, bad.data(), keys.data() + 3), vismem::Error);
  EXPECT_EQ(idx.size(), 3);
  EXPECT_TRUE(run(idx, q, 5) == before);

  for (int64_t nq : {1, 4}) {  // scan and batch paths
    std::vector<float> nan_q(q.begin(), q.begin() + nq * d);
    nan_q[(nq - 1) * d + 2] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> dist(nq * 5);
    std::vector<int64_t> out(nq * 5);
    EXPECT_THROW(idx.search(nq, nan_q.data(), 5, dist.data(), out.data()), vismem::Error);
  }
  std::vector<float> dist(5);
  std::vector<int64_t> out(5);
  EXPECT_THROW(idx.search(1, q.data(), -1, dist.data(), out.data()), vismem::Error);
  EXPECT_THROW(idx.search(1, q.data(), 5, dist.data(), out.data(), -2), vismem::Error);
  EXPECT_THROW(FlatIndex(0), vismem::Error);
}

TEST(FlatIndex, ConcurrentSearchesAgree) {
  std::mt19937_64 rng(23);
  const int d = 64, k = 10;
  auto x = random_unit(3000, d, rng);
  auto keys = shuffled_keys(3000, rng);
  FlatIndex idx(d);
  idx.add(3000, x.data(), keys.data());
  auto q = random_unit(50, d, rng);
  Result expect = oracle(x, keys, d, q, k);
  std::vector<Result> got(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) pool.emplace_back([&, t] { got[t] = run(idx, q, k, 2); });
  for (auto& th : pool) th.join();
  for (const Result& r : got) EXPECT_TRUE(r == expect);
}

// Every kernel level this CPU can run (portable, avx2, avx512) against the
// portable one, bit for bit: distances, whole searches with every storage and
// scan, and the float16 copy's rounding. Levels above cpu_max_isa() cannot run
// here (an AVX2 machine compiles the AVX-512 kernels but never calls them);
// asking for them must clamp.
class IsaLevels : public testing::Test {
 protected:
  void TearDown() override { vismem::set_isa(before_); }
  std::vector<vismem::Isa> levels() const {
    std::vector<vismem::Isa> v;
    for (vismem::Isa l : {vismem::Isa::portable, vismem::Isa::avx2, vismem::Isa::avx512})
      if (l <= vismem::cpu_max_isa()) v.push_back(l);
    return v;
  }
  vismem::Isa before_ = vismem::cpu_isa();
};

TEST_F(IsaLevels, SetIsaClampsToTheCpu) {
  EXPECT_EQ(vismem::set_isa(vismem::Isa::portable), before_);
  EXPECT_EQ(vismem::cpu_isa(), vismem::Isa::portable);
  vismem::set_isa(vismem::Isa::avx512);
  EXPECT_EQ(vismem::cpu_isa(), vismem::cpu_max_isa());
  EXPECT_EQ(vismem::flat_f16_supported(), vismem::cpu_features().f16c);
}

TEST_F(IsaLevels, DistancesAndSearchesAreBitIdentical) {
  std::mt19937_64 rng(41);
  struct Shape { int64_t n; int d; int64_t nq; int k; };
  // Batch 1 and 8 (the float16 copy's range), 9 and 70 (sgemm or the kernel).
  const Shape shapes[] = {{2000, 1024, 1, 20}, {1500, 100, 8, 10}, {1200, 384, 9, 30}, {900, 33, 70, 5}};
  for (const Shape& sh : shapes) {
    auto x = random_unit(sh.n, sh.d, rng);
    auto keys = shuffled_keys(sh.n, rng);
    auto q = random_unit(sh.nq, sh.d, rng);
    std::vector<float> dist_portable;
    std::vector<Result> search_portable;
    for (vismem::Isa level : levels()) {
      vismem::set_isa(level);
      SCOPED_TRACE(testing::Message() << vismem::isa_name(level) << " d=" << sh.d << " nq=" << sh.nq);
      std::vector<float> dist;
      for (int64_t i = 0; i < sh.nq; ++i)
        for (int64_t j = 0; j < 50; ++j) dist.push_back(FlatIndex::distance(&q[i * sh.d], &x[j * sh.d], sh.d));
      std::vector<Result> searches;
      for (const auto& opt : kVariants) {
        FlatIndex idx(sh.d, opt);
        idx.add(sh.n, x.data(), keys.data());
        searches.push_back(run(idx, q, sh.k, 2));
      }
      if (level == vismem::Isa::portable) {
        dist_portable = dist;
        search_portable = searches;
        EXPECT_TRUE(searches[0] == oracle(x, keys, sh.d, q, sh.k));
        continue;
      }
      EXPECT_EQ(std::memcmp(dist.data(), dist_portable.data(), dist.size() * sizeof(float)), 0);
      for (size_t v = 0; v < searches.size(); ++v) EXPECT_TRUE(searches[v] == search_portable[v]) << name(kVariants[v]);
    }
  }
}

// The float16 copy: the portable rounding (software) and F16C's give the same
// bits over a spread of float bit patterns, every exponent, ties, subnormals,
// overflow, infinities and NaNs included.
TEST_F(IsaLevels, HalfConversionIsBitIdentical) {
  std::vector<float> v;
  for (uint64_t b = 0; b <= 0xffffffffull; b += 4093) {
    const uint32_t u = static_cast<uint32_t>(b);
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e-8f, 2.98023224e-8f, 2.98023252e-8f,
                  6.1035156e-5f, 6.1035152e-5f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()})
    v.push_back(f);
  std::vector<uint16_t> portable(v.size());
  vismem::set_isa(vismem::Isa::portable);
  vismem::flat_to_half(v.data(), portable.data(), static_cast<int64_t>(v.size()));
  // Round to nearest even: 1 + 1/2048 is a tie down to 1, 1 + 3/2048 a tie
  // up; 65520 overflows to infinity; 2^-25 (half the smallest subnormal) ties to 0.
  auto half_of = [](float f) {
    uint16_t h;
    vismem::flat_to_half(&f, &h, 1);
    return h;
  };
  EXPECT_EQ(half_of(1.0f + 1.0f / 2048), 0x3c00);
  EXPECT_EQ(half_of(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(half_of(65520.0f), 0x7c00);
  EXPECT_EQ(half_of(-65504.0f), 0xfbff);
  EXPECT_EQ(half_of(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(half_of(std::ldexp(3.0f, -25)), 0x0002);
  for (vismem::Isa level : levels()) {
    if (level == vismem::Isa::portable) continue;
    vismem::set_isa(level);
    std::vector<uint16_t> got(v.size());
    vismem::flat_to_half(v.data(), got.data(), static_cast<int64_t>(v.size()));
    size_t differ = 0;
    for (size_t i = 0; i < v.size(); ++i) differ += got[i] != portable[i];
    EXPECT_EQ(differ, 0u) << vismem::isa_name(level);
  }
  if (levels().size() == 1) GTEST_SKIP() << "this CPU runs the portable kernels only";
}

}  // namespace
