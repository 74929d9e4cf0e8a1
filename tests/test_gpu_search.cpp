// The CUDA exact search (gpu_search.h) against the CPU's flat_search, bit for
// bit, where a GPU is present; everywhere, that a build or machine without
// one says so and refuses to search.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "error.h"
#include "flat_index.h"
#include "gpu_search.h"
#include "util_test.h"

namespace {

using vismem::test::random_normal;

// Rows in flat_search's layout: n x stride, zero padded past dim, unit norm.
struct Rows {
  int dim = 0, ld = 0;
  std::vector<float> x;
  std::vector<int64_t> keys;
  vismem::FlatRows view() const {
    vismem::FlatRows r;
    r.x = x.data();
    r.keys = keys.data();
    r.n = static_cast<int64_t>(keys.size());
    r.max_norm = 1.0 + 1e-5;
    return r;
  }
};

Rows make_rows(int64_t n, int dim, uint64_t seed) {
  Rows r;
  r.dim = dim;
  r.ld = vismem::flat_row_stride(dim);
  const auto v = random_normal(size_t(n * dim), seed);
  r.x.assign(size_t(n * r.ld), 0.0f);
  r.keys.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    double norm = 0;
    for (int j = 0; j < dim; ++j) norm += double(v[i * dim + j]) * v[i * dim + j];
    for (int j = 0; j < dim; ++j) r.x[i * r.ld + j] = float(v[i * dim + j] / std::sqrt(norm));
    r.keys[i] = 3 * i + 7;  // not the row number
  }
  return r;
}

void expect_same(const Rows& rows, int64_t nq, const std::vector<float>& q, int k, const char* what) {
  vismem::FlatIndex::Options opt;
  std::vector<float> cd(size_t(nq * k)), gd(size_t(nq * k));
  std::vector<int64_t> ck(size_t(nq * k)), gk(size_t(nq * k));
  vismem::flat_search(rows.view(), rows.dim, opt, nq, q.data(), k, cd.data(), ck.data(), 1);
  vismem::GpuFlatSearch gpu(rows.view(), rows.dim);
  // Both ways of the GPU: the fused scan (every batch up to 1 << 30) and
  // scores + selection (batches above 0), on the same data.
  for (const int fused_max : {1 << 30, 0}) {
    gpu.set_fused_max_batch(fused_max);
    const char* way = fused_max ? "fused" : "scores";
    std::fill(gd.begin(), gd.end(), -1.0f);
    gpu.search(nq, q.data(), k, gd.data(), gk.data());
    for (int64_t t = 0; t < nq * k; ++t) {
      ASSERT_EQ(gk[t], ck[t]) << what << ", " << way << ": query " << t / k << ", rank " << t % k;
      // Bits, not values: the fixed order is the contract.
      ASSERT_EQ(std::memcmp(&gd[t], &cd[t], sizeof(float)), 0)
          << what << ", " << way << ": query " << t / k << ", rank " << t % k << ": " << gd[t] << " vs " << cd[t];
    }
  }
}

}  // namespace

TEST(GpuSearch, WithoutAGpuItSaysWhyAndRefuses) {
  std::string why;
  if (vismem::gpu_search_available(&why)) GTEST_SKIP() << "a GPU is present: the other tests run";
  EXPECT_FALSE(why.empty());
  const Rows rows = make_rows(10, 8, 1);
  try {
    vismem::GpuFlatSearch gpu(rows.view(), rows.dim);
    FAIL() << "constructed without a GPU";
  } catch (const vismem::Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU search"), std::string::npos) << e.what();
  }
}

TEST(GpuSearch, MatchesTheCpuBitForBit) {
  std::string why;
  if (!vismem::gpu_search_available(&why)) GTEST_SKIP() << why;
  // dim 37: padded lanes; 384, 1024: real widths. n past one and several
  // 2048-row blocks, and not a multiple of the 64 rows a score block takes;
  // batches not a multiple of its 8 queries; k from 1 to the limit.
  struct Case {
    int64_t n;
    int dim, k, nq;
  };
  const Case cases[] = {{1, 37, 5, 3},       {2047, 37, 10, 7},   {2049, 384, 100, 5},   {9000, 1024, 100, 4},
                        {20000, 384, 1024, 2}, {5000, 384, 1, 300}, {3000, 64, 700, 3},
                        {0, 16, 4, 9}};
  for (const Case& c : cases) {
    const Rows rows = make_rows(c.n, c.dim, 10 + c.n);
    const auto q = random_normal(size_t(c.nq * c.dim), 20 + c.n);
    expect_same(rows, c.nq, q, c.k, ("n " + std::to_string(c.n) + ", dim " + std::to_string(c.dim)).c_str());
  }
}

TEST(GpuSearch, TiesDeletedRowsAndPadding) {
  std::string why;
  if (!vismem::gpu_search_available(&why)) GTEST_SKIP() << why;
  Rows rows = make_rows(6000, 48, 3);
  // Duplicates of row 0 under other keys: equal distances, ranked by key.
  for (int64_t i = 1; i < 400; i += 7)
    std::copy(rows.x.begin(), rows.x.begin() + rows.ld, rows.x.begin() + i * rows.ld);
  // Deleted rows (key < 0) are never returned, wherever they are.
  for (int64_t i = 0; i < 6000; i += 3) rows.keys[size_t(i)] = -1;
  std::vector<float> q(rows.x.begin(), rows.x.begin() + rows.dim);  // row 0, also in rows 1, 8, 15, ...
  q.resize(2 * rows.dim);
  std::copy(rows.x.begin() + 5 * rows.ld, rows.x.begin() + 5 * rows.ld + rows.dim, q.begin() + rows.dim);
  expect_same(rows, 2, q, 200, "ties and deleted rows");
  // Fewer live rows than k: key -1 and +inf padding, as the CPU pads.
  Rows few = make_rows(30, 16, 4);
  for (int64_t i = 0; i < 30; i += 2) few.keys[size_t(i)] = -1;
  const auto fq = random_normal(16, 5);
  expect_same(few, 1, fq, 40, "padding");
}

TEST(GpuSearch, BadQueriesAreRefusedAndWriteNothing) {
  std::string why;
  if (!vismem::gpu_search_available(&why)) GTEST_SKIP() << why;
  const Rows rows = make_rows(100, 8, 6);
  vismem::GpuFlatSearch gpu(rows.view(), rows.dim);
  std::vector<float> q(8, 0.1f), d(10, -3.0f);
  std::vector<int64_t> k(10, -5);
  q[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(gpu.search(1, q.data(), 10, d.data(), k.data()), vismem::Error);
  q[3] = 2e15f;
  EXPECT_THROW(gpu.search(1, q.data(), 10, d.data(), k.data()), vismem::Error);
  q[3] = 0.1f;
  EXPECT_THROW(gpu.search(1, q.data(), vismem::GpuFlatSearch::kMaxK + 1, d.data(), k.data()), vismem::Error);
  EXPECT_THROW(gpu.search(1, q.data(), -1, d.data(), k.data()), vismem::Error);
  for (int t = 0; t < 10; ++t) {
    EXPECT_EQ(d[t], -3.0f);
    EXPECT_EQ(k[t], -5);
  }
}

TEST(GpuSearch, TheLargestKeyAndTwoSearchesOfOtherWidths) {
  std::string why;
  if (!vismem::gpu_search_available(&why)) GTEST_SKIP() << why;
  // INT64_MAX is a key FlatIndex accepts: it must come back as a key, not as padding.
  Rows rows = make_rows(50, 4, 7);
  rows.keys[0] = std::numeric_limits<int64_t>::max();
  const std::vector<float> q(rows.x.begin(), rows.x.begin() + 4);
  expect_same(rows, 1, q, 3, "largest key");
  // A wide search made first and a narrow one after it: both still search
  // (a kernel's shared-memory limit is the function's, not the object's).
  const Rows wide = make_rows(3000, 1024, 8), narrow = make_rows(3000, 16, 9);
  vismem::GpuFlatSearch a(wide.view(), wide.dim), b(narrow.view(), narrow.dim);
  const auto qa = random_normal(1024, 10);
  std::vector<float> d(5);
  std::vector<int64_t> k(5);
  EXPECT_NO_THROW(a.search(1, qa.data(), 5, d.data(), k.data()));
  EXPECT_NO_THROW(b.search(1, qa.data(), 5, d.data(), k.data()));
}
