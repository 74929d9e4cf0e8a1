// FaissIndex: recall against brute force, physical removal for every kind,
// files that round-trip, and key renumbering.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <omp.h>
#include <unistd.h>

#include "error.h"
#include "faiss_index.h"
#include "flat_index.h"

namespace vismem {
namespace {

// n unit vectors around `clusters` centers (how image embeddings look).
std::vector<float> clustered(int64_t n, int d, int clusters, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> centers(static_cast<size_t>(clusters) * d);
  for (auto& v : centers) v = g(rng);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (int64_t i = 0; i < n; ++i) {
    const float* c = centers.data() + (i % clusters) * d;
    double ss = 0;
    for (int j = 0; j < d; ++j) {
      float v = c[j] + 0.6f * g(rng);
      x[i * d + j] = v;
      ss += double(v) * v;
    }
    for (int j = 0; j < d; ++j) x[i * d + j] = static_cast<float>(x[i * d + j] / std::sqrt(ss));
  }
  return x;
}

// recall@k of the approximate keys against exact search over the same items.
double recall(const std::vector<int64_t>& approx, const std::vector<int64_t>& exact, int64_t nq, int k) {
  int64_t hit = 0;
  for (int64_t i = 0; i < nq; ++i) {
    std::set<int64_t> truth(exact.begin() + i * k, exact.begin() + (i + 1) * k);
    for (int j = 0; j < k; ++j) hit += truth.count(approx[i * k + j]);
  }
  return double(hit) / double(nq * k);
}

struct Case {
  const char* factory;
  FaissIndex::Kind kind;
  double min_recall;  // at the params below, k = 10
  FaissIndex::Params params;
};

// One OpenMP thread: FAISS's k-means runs many short parallel regions, which
// crawl when the test runner keeps every core busy.
class FaissKinds : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { omp_set_num_threads(1); }
};

TEST_P(FaissKinds, RecallAgainstBruteForceThenPhysicalRemoval) {
  const Case c = GetParam();
  const int d = 32, k = 10;
  const int64_t n = 12000, nq = 50;
  std::vector<float> x = clustered(n, d, 40, 1), q = clustered(nq, d, 40, 2);
  std::vector<int64_t> keys(n);
  for (int64_t i = 0; i < n; ++i) keys[i] = 1000 + 3 * i;  // keys are the caller's, not positions

  FaissIndex idx(d, c.factory);
  EXPECT_EQ(idx.kind(), c.kind);
  if (!idx.is_trained()) {
    EXPECT_THROW(idx.add(n, x.data(), keys.data()), Error);
    EXPECT_THROW(idx.train(idx.train_min() - 1, x.data()), Error);
    idx.train(std::min(n, idx.train_sample()), x.data());
  }
  idx.add(n, x.data(), keys.data());
  EXPECT_EQ(idx.size(), n);

  FlatIndex exact(d);
  exact.add(n, x.data(), keys.data());
  std::vector<float> ed(nq * k), ad(nq * k);
  std::vector<int64_t> ek(nq * k), ak(nq * k);
  exact.search(nq, q.data(), k, ed.data(), ek.data());
  idx.search(nq, q.data(), k, ad.data(), ak.data(), c.params);
  EXPECT_GE(recall(ak, ek, nq, k), c.min_recall) << c.factory;

  // Remove every third item: none of them is ever found again, the rest keep
  // their recall, and the file written after holds no removed key.
  std::vector<int64_t> gone;
  for (int64_t i = 0; i < n; i += 3) gone.push_back(keys[i]);
  EXPECT_EQ(idx.remove(static_cast<int64_t>(gone.size()), gone.data()), static_cast<int64_t>(gone.size()));
  EXPECT_EQ(idx.size(), n - static_cast<int64_t>(gone.size()));
  EXPECT_EQ(exact.remove(static_cast<int64_t>(gone.size()), gone.data()), static_cast<int64_t>(gone.size()));
  const std::set<int64_t> gone_set(gone.begin(), gone.end());
  idx.search(nq, q.data(), k, ad.data(), ak.data(), c.params);
  exact.search(nq, q.data(), k, ed.data(), ek.data());
  for (int64_t key : ak) EXPECT_EQ(gone_set.count(key), 0u);
  EXPECT_GE(recall(ak, ek, nq, k), c.min_recall - 0.05) << c.factory;
  for (int64_t key : idx.keys()) EXPECT_EQ(gone_set.count(key), 0u);

  const std::string path = ::testing::TempDir() + "/vismem_faiss_" + std::to_string(::getpid()) + ".faiss";
  idx.write(path, "tag7");
  std::string tag;
  auto back = FaissIndex::read(path, &tag);
  EXPECT_EQ(tag, "tag7");
  EXPECT_EQ(back->factory(), c.factory);
  EXPECT_EQ(back->size(), idx.size());
  EXPECT_EQ(back->holes(), idx.holes());
  std::vector<float> bd(nq * k);
  std::vector<int64_t> bk(nq * k);
  back->search(nq, q.data(), k, bd.data(), bk.data(), c.params);
  EXPECT_EQ(bk, ak);

  // Renumbering keys (a compaction) keeps the neighbors, under their new names.
  back->remap_keys([](int64_t key) { return key * 2 + 1; });
  back->search(nq, q.data(), k, bd.data(), bk.data(), c.params);
  for (size_t i = 0; i < bk.size(); ++i) EXPECT_EQ(bk[i], ak[i] < 0 ? -1 : ak[i] * 2 + 1);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    All, FaissKinds,
    ::testing::Values(Case{"IVF64,Flat", FaissIndex::Kind::ivf, 0.95, {.nprobe = 16}},
                      Case{"IVF64,PQ8", FaissIndex::Kind::ivf, 0.5, {.nprobe = 16}},
                      Case{"IVF64,SQ8", FaissIndex::Kind::ivf, 0.9, {.nprobe = 16}},
                      Case{"HNSW16", FaissIndex::Kind::hnsw, 0.9, {.ef = 256}},
                      Case{"HNSW16,SQ8", FaissIndex::Kind::hnsw, 0.85, {.ef = 256}},
                      Case{"PQ8", FaissIndex::Kind::codes, 0.35, {}}),
    [](const auto& info) {
      std::string s = info.param.factory;
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

TEST(FaissIndex, RefusesWhatItCannotServe) {
  EXPECT_THROW(FaissIndex(16, "Flat"), Error);
  EXPECT_THROW(FaissIndex(16, ""), Error);
  EXPECT_THROW(FaissIndex(16, "IVF4,NoSuchCodec"), Error);
  EXPECT_THROW(FaissIndex(16, "PCA8,IVF4,Flat"), Error);
  EXPECT_THROW(FaissIndex(16, "IVF4,PQ5"), Error);  // 16 dims do not split into 5 sub-vectors
  EXPECT_FALSE(wants_faiss_index("Flat", 16));
  EXPECT_FALSE(wants_faiss_index("flat", 16));
  EXPECT_TRUE(wants_faiss_index("IVF4,Flat", 16));
  // Kinds FAISS cannot remove from (unlearning needs it) and degenerate sizes.
  for (const char* f : {"NSG32,Flat", "IVF16,Flat,Refine(Flat)", "IVF16,PQ8x4fs", "IVF0,Flat", "HNSW1", "IDMap2,HNSW16"})
    EXPECT_THROW(FaissIndex(16, f), Error) << f;
  try {
    FaissIndex(16, "IVF4,PQ5");
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find(".cpp:"), std::string::npos) << m;  // FAISS's reason, not its source location
    EXPECT_NE(m.find("IVF4,PQ5"), std::string::npos) << m;
  }
}

TEST(FaissIndex, DamagedGraphIsRefusedNotFollowed) {
  const int d = 8;
  std::vector<float> x = clustered(300, d, 4, 6);
  std::vector<int64_t> keys(300);
  for (int i = 0; i < 300; ++i) keys[i] = i;
  FaissIndex idx(d, "HNSW4");
  idx.add(300, x.data(), keys.data());
  const std::string path = ::testing::TempDir() + "/vismem_graph_" + std::to_string(::getpid()) + ".faiss";
  idx.write(path);
  // Overwrite the end of the file (the link table and the id map) with large values.
  const auto size = std::filesystem::file_size(path);
  FILE* f = std::fopen(path.c_str(), "r+b");
  std::fseek(f, static_cast<long>(size / 2), SEEK_SET);
  std::vector<unsigned char> junk(size / 4, 0x7f);
  std::fwrite(junk.data(), 1, junk.size(), f);
  std::fclose(f);
  EXPECT_THROW(FaissIndex::read(path), Error);
  std::filesystem::remove(path);
}

TEST(FaissIndex, HnswRemovalCutsTheNodeOutAndZeroesItsVector) {
  const int d = 16;
  const int64_t n = 500;
  std::vector<float> x = clustered(n, d, 5, 3);
  std::vector<int64_t> keys(n);
  for (int64_t i = 0; i < n; ++i) keys[i] = i;
  FaissIndex idx(d, "HNSW8");
  idx.add(n, x.data(), keys.data());
  std::vector<float> v(d);
  ASSERT_TRUE(idx.reconstruct(7, v.data()));
  EXPECT_EQ(v[0], x[7 * d]);
  int64_t gone = 7;
  EXPECT_EQ(idx.remove(1, &gone), 1);
  EXPECT_EQ(idx.holes(), 1);
  EXPECT_FALSE(idx.reconstruct(7, v.data()));
  // Its own vector as the query finds everything but it.
  std::vector<float> dist(n);
  std::vector<int64_t> got(n);
  idx.search(1, x.data() + 7 * d, static_cast<int>(n), dist.data(), got.data(), {.ef = 600});
  EXPECT_EQ(std::count(got.begin(), got.end(), 7), 0);
  // The written file holds no byte of the removed vector.
  const std::string path = ::testing::TempDir() + "/vismem_hnsw_" + std::to_string(::getpid()) + ".faiss";
  idx.write(path);
  FILE* f = std::fopen(path.c_str(), "rb");
  std::string bytes;
  char buf[65536];
  size_t r;
  while ((r = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, r);
  std::fclose(f);
  const std::string needle(reinterpret_cast<const char*>(x.data() + 7 * d), sizeof(float) * d);
  EXPECT_EQ(bytes.find(needle), std::string::npos);
  const std::string other(reinterpret_cast<const char*>(x.data() + 8 * d), sizeof(float) * d);
  EXPECT_NE(bytes.find(other), std::string::npos);  // the check can see vectors
  // Removing everything leaves an empty, usable index.
  std::vector<int64_t> rest;
  for (int64_t i = 0; i < n; ++i)
    if (i != 7) rest.push_back(i);
  idx.remove(static_cast<int64_t>(rest.size()), rest.data());
  EXPECT_EQ(idx.size(), 0);
  idx.add(1, x.data(), keys.data());
  idx.search(1, x.data(), 1, dist.data(), got.data());
  EXPECT_EQ(got[0], 0);
  std::filesystem::remove(path);
}

TEST(FaissIndex, DamagedFilesAreRefused) {
  const int d = 8;
  std::vector<float> x = clustered(200, d, 4, 5);
  std::vector<int64_t> keys(200);
  for (int i = 0; i < 200; ++i) keys[i] = i;
  FaissIndex idx(d, "HNSW4");
  idx.add(200, x.data(), keys.data());
  const std::string path = ::testing::TempDir() + "/vismem_dmg_" + std::to_string(::getpid()) + ".faiss";
  idx.write(path);
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  EXPECT_THROW(FaissIndex::read(path), Error);
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("not an index", f);
  std::fclose(f);
  EXPECT_THROW(FaissIndex::read(path), Error);
  std::filesystem::remove(path);
  EXPECT_THROW(FaissIndex::read(path), Error);
}

}  // namespace
}  // namespace vismem
