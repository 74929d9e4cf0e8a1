// A memory with an approximate (FAISS) index keeps every promise of the
// memory: exact distances on every answer, exhaustive settings equal exact
// search, removal == never added with no byte left in any file (index files
// included), crash points on both sides of every index commit, coherence
// across handles, compaction, damaged index files.
#include <gtest/gtest.h>

#include <omp.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "error.h"
#include "faiss_index.h"
#include "flat_index.h"
#include "memory.h"
#include "npy.h"
#include "textio.h"
#include "unlearn.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::TempDir;

namespace {

std::vector<float> clustered(int64_t n, int d, int clusters, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::mt19937 crng(99);  // the same centers for every call: queries look like the items
  std::vector<float> centers(static_cast<size_t>(clusters) * d);
  for (auto& v : centers) v = g(crng);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) x[i * d + j] = centers[(i % clusters) * d + j] + 0.5f * g(rng);
  return x;
}
std::vector<std::string> ids_of(int64_t from, int64_t to) {
  std::vector<std::string> v;
  for (int64_t i = from; i < to; ++i) v.push_back("i" + std::to_string(i));
  return v;
}
std::vector<std::string> labels_of(int64_t from, int64_t to) {
  std::vector<std::string> v;
  for (int64_t i = from; i < to; ++i) v.push_back("c" + std::to_string(i % 7));
  return v;
}
std::vector<std::string> answers(const Memory& m, const std::vector<float>& q, int64_t nq, int k,
                                 const SearchParams& sp) {
  std::vector<std::string> out;
  for (auto& row : m.search(q.data(), nq, k, {}, 0, &sp)) {
    std::string s;
    for (auto& n : row) {
      uint32_t bits;
      std::memcpy(&bits, &n.distance, 4);
      s += n.id + "/" + std::to_string(bits) + " ";
    }
    out.push_back(s);
  }
  return out;
}
// Settings under which the index considers every item (IVF: every list; HNSW: a wide beam).
const SearchParams kExhaustive{.nprobe = 1 << 20, .ef = 2048, .k_factor = 8};
const SearchParams kExact{.exact = true};

std::string bytes_of_files(const std::string& p) {
  std::string b;
  for (const auto& f : Memory::files(p))
    if (std::filesystem::exists(f) && f.find(".lock") == std::string::npos) b += test::read_file(f);
  return b;
}
std::vector<std::string> index_files(const std::string& p) {
  std::vector<std::string> out;
  for (const auto& f : Memory::files(p))
    if (f.size() > 6 && f.substr(f.size() - 6) == ".faiss" && std::filesystem::exists(f)) out.push_back(f);
  return out;
}

int run_env(const std::string& env, const std::string& args) {
  std::string cmd = env + " " + VISMEM_CLI_PATH + " " + args + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

class AnnMemory : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { omp_set_num_threads(1); }  // FAISS k-means crawls on a busy test machine otherwise
};

constexpr int kD = 32;

// 2000 items build the index (fold 500), 700 more are folded in, 300 stay in the tail.
Memory build(const std::string& p, const std::string& factory, const std::vector<float>& x) {
  Memory m = Memory::create(p, {.dim = kD, .index = factory, .index_fold_rows = 500});
  m.add(ids_of(0, 2000), labels_of(0, 2000), x.data());
  m.add(ids_of(2000, 2700), labels_of(2000, 2700), x.data() + 2000 * kD);
  m.add(ids_of(2700, 3000), labels_of(2700, 3000), x.data() + 2700 * kD);
  return m;
}

TEST_P(AnnMemory, ExactDistancesAlwaysAndExhaustiveEqualsExact) {
  TempDir t;
  const std::string factory = GetParam();
  auto x = clustered(3000, kD, 12, 1), q = clustered(40, kD, 12, 2);
  Memory m = build(t / "m.db", factory, x);
  auto info = m.index_info(true);
  ASSERT_TRUE(info && info->built);
  EXPECT_EQ(info->indexed_rows, 2700);
  EXPECT_EQ(info->tail_rows, 300);
  EXPECT_EQ(info->entries, 2700);
  // Exhaustive settings: the same answers as the exact scan, bit for bit.
  EXPECT_TRUE(answers(m, q, 40, 20, kExhaustive) == answers(m, q, 40, 20, kExact));
  // Default settings: the neighbor set may differ, every distance is the exact one.
  auto all = m.search(q.data(), 40, 3000, {}, 0, &kExact);
  auto approx = m.search(q.data(), 40, 20, {}, 0, &m.search_params());
  int64_t hit = 0;
  for (int i = 0; i < 40; ++i) {
    std::map<std::string, float> exact;
    for (auto& n : all[i]) exact[n.id] = n.distance;
    std::set<std::string> top;
    for (int j = 0; j < 20; ++j) top.insert(all[i][j].id);
    ASSERT_EQ(approx[i].size(), 20u);
    for (auto& n : approx[i]) {
      ASSERT_TRUE(exact.count(n.id));
      uint32_t a, b;
      std::memcpy(&a, &n.distance, 4);
      std::memcpy(&b, &exact[n.id], 4);
      EXPECT_EQ(a, b) << n.id;
      hit += top.count(n.id);
    }
    for (size_t j = 1; j < approx[i].size(); ++j) EXPECT_LE(approx[i][j - 1].distance, approx[i][j].distance);
  }
  EXPECT_GE(double(hit) / (40 * 20), 0.8) << "recall@20 at the default settings";
}

TEST_P(AnnMemory, RemovedEqualsNeverAddedWithNoByteLeft) {
  TempDir t;
  const std::string factory = GetParam();
  auto x = clustered(3000, kD, 12, 3), q = clustered(30, kD, 12, 4);
  Memory a = build(t / "a.db", factory, x);
  // Removed: some in the index, some in the exact tail.
  std::vector<std::string> gone = {"i5", "i17", "i1999", "i2100", "i2950"};
  std::set<int64_t> gone_rows;
  for (auto& id : gone) gone_rows.insert(a.item(id)->row);
  std::vector<std::vector<float>> vecs;
  for (auto& id : gone) vecs.push_back(a.embedding(id));
  const bool raw = factory.find("SQ") == std::string::npos;  // the index stores the floats themselves
  if (raw) EXPECT_TRUE(contains_embedding_bytes(test::read_file(index_files(t / "a.db").at(0)), {vecs[0]}, kD));
  EXPECT_EQ(a.remove(gone), 5);
  for (int64_t r : a.index_rows()) EXPECT_EQ(gone_rows.count(r), 0u);
  EXPECT_FALSE(contains_embedding_bytes(bytes_of_files(t / "a.db"), vecs, kD));
  EXPECT_EQ(index_files(t / "a.db").size(), 1u);
  // The removed items' own vectors as queries never find them.
  std::vector<float> qs;
  for (auto& v : vecs) qs.insert(qs.end(), v.begin(), v.end());
  for (auto& row : a.search(qs.data(), 5, 50, {}, 0, &a.search_params()))
    for (auto& n : row) EXPECT_EQ(std::count(gone.begin(), gone.end(), n.id), 0);
  // A memory never given them answers the same.
  std::vector<std::string> ids, labels;
  std::vector<float> xs;
  for (int64_t i = 0; i < 3000; ++i) {
    const std::string id = "i" + std::to_string(i);
    if (std::count(gone.begin(), gone.end(), id)) continue;
    ids.push_back(id);
    labels.push_back("c" + std::to_string(i % 7));
    xs.insert(xs.end(), x.begin() + i * kD, x.begin() + (i + 1) * kD);
  }
  Memory b = Memory::create(t / "b.db", {.dim = kD, .index = factory, .index_fold_rows = 500});
  b.add(ids, labels, xs.data());
  EXPECT_EQ(answers(a, q, 30, 20, kExact), answers(b, q, 30, 20, kExact));
  if (factory.rfind("IVF", 0) == 0) {
    // Every list probed: exhaustive, so the answers are exactly those of the memory never given them.
    EXPECT_TRUE(answers(a, q, 30, 20, kExhaustive) == answers(b, q, 30, 20, kExhaustive));
  } else {
    // A graph is never exhaustive: both reach the exact answers but for a rare miss.
    const SearchParams& ex = kExhaustive;
    for (const Memory* m : {&a, &b}) {
      auto got = m->search(q.data(), 30, 20, {}, 0, &ex);
      auto want = m->search(q.data(), 30, 20, {}, 0, &kExact);
      int64_t hit = 0;
      for (int i = 0; i < 30; ++i)
        for (auto& n : got[i])
          hit += std::count_if(want[i].begin(), want[i].end(), [&](const Neighbor& w) { return w.id == n.id; });
      EXPECT_GE(hit, 30 * 20 * 99 / 100);
    }
  }
  // The receipt checks the index too.
  UnlearnReceipt r = remove_verified(a, {"i100", "i2800"}, 8, 10);
  EXPECT_TRUE(r.ok()) << r.summary();
}

TEST_P(AnnMemory, CompactionAndUpsertKeepTheIndexRight) {
  TempDir t;
  const std::string factory = GetParam();
  auto x = clustered(3000, kD, 12, 5), q = clustered(30, kD, 12, 6);
  Memory m = build(t / "m.db", factory, x);
  m.remove({"i0", "i1", "i2", "i2500", "i2999"});
  const auto before = answers(m, q, 30, 20, m.search_params());
  const auto exact_before = answers(m, q, 30, 20, kExact);
  EXPECT_EQ(m.compact(), 5);
  EXPECT_EQ(answers(m, q, 30, 20, m.search_params()), before);
  EXPECT_EQ(answers(m, q, 30, 20, kExact), exact_before);
  EXPECT_EQ(m.index_info()->indexed_rows, 2700 - 4);
  EXPECT_EQ(answers(Memory::open(t / "m.db"), q, 30, 20, m.search_params()), before);
  // Upsert: the old vector leaves the index.
  const int64_t old_row = m.item("i10")->row;
  std::vector<float> nv = clustered(1, kD, 12, 7);
  m.add({"i10"}, {"c3"}, nv.data(), AddMode::upsert);
  for (int64_t r : m.index_rows()) EXPECT_NE(r, old_row);
  EXPECT_EQ(m.search(nv.data(), 1, 1, {}, 0, &m.search_params())[0][0].id, "i10");
}

INSTANTIATE_TEST_SUITE_P(Kinds, AnnMemory, ::testing::Values("IVF16,Flat", "IVF16,SQ8", "HNSW8"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

TEST(AnnMemoryStore, CrashesAroundIndexCommits) {
  omp_set_num_threads(1);
  TempDir t;
  const std::string p = t / "m.db";
  auto x = clustered(1400, kD, 10, 8);
  {
    Memory m = Memory::create(p, {.dim = kD, .index = "IVF8,Flat", .index_fold_rows = 300});
    m.add(ids_of(0, 1000), labels_of(0, 1000), x.data());
    ASSERT_TRUE(m.index_info()->built);
  }
  write_npy_f32(t / "new.npy", x.data() + 1000 * kD, {400, kD});
  std::vector<std::string> l = labels_of(1000, 1400), ids = ids_of(1000, 1400);
  write_lines(t / "labels.txt", l);
  write_lines(t / "ids.txt", ids);
  const std::string before_file = index_files(p).at(0);
  // Killed after writing the folded index, before pointing the catalog at it:
  // the add itself committed, the old index stays, the orphan goes at the next open.
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=index-before-commit",
                    "add " + p + " --embeddings " + t / "new.npy" + " --labels " + t / "labels.txt" + " --ids " +
                        t / "ids.txt"),
            137);
  EXPECT_EQ(index_files(p).size(), 2u);
  {
    Memory m = Memory::open(p);
    EXPECT_EQ(m.size(), 1400);
    EXPECT_EQ(index_files(p), std::vector<std::string>{before_file});
    EXPECT_EQ(m.index_info()->tail_rows, 400);
    EXPECT_EQ(m.search(x.data() + 1300 * kD, 1, 1, {}, 0, &m.search_params())[0][0].id, "i1300");
  }
  // Killed after the commit of a removal's new index, before the old file was
  // zeroed: the next open zeroes and deletes it; no removed byte stays.
  std::vector<std::vector<float>> vecs;
  {
    Memory m = Memory::open(p);
    vecs.push_back(m.embedding("i7"));
  }
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=index-after-commit", "remove " + p + " --id i7"), 137);
  EXPECT_TRUE(contains_embedding_bytes(bytes_of_files(p), vecs, kD));  // the old index file still has it
  {
    Memory m = Memory::open(p);
    EXPECT_FALSE(m.contains("i7"));
    EXPECT_EQ(index_files(p).size(), 1u);
    EXPECT_FALSE(contains_embedding_bytes(bytes_of_files(p), vecs, kD));
  }
  // Killed before that commit: the scrub is redone by the next open.
  {
    Memory m = Memory::open(p);
    vecs = {m.embedding("i8")};
  }
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=index-before-commit", "remove " + p + " --id i8"), 137);
  {
    Memory m = Memory::open(p);
    EXPECT_FALSE(m.contains("i8"));
    EXPECT_EQ(index_files(p).size(), 1u);
    EXPECT_FALSE(contains_embedding_bytes(bytes_of_files(p), vecs, kD));
    const int64_t row = 8;
    for (int64_t r : m.index_rows()) EXPECT_NE(r, row);
  }
}

TEST(AnnMemoryStore, OtherHandlesFollowIndexChanges) {
  omp_set_num_threads(1);
  TempDir t;
  const std::string p = t / "m.db";
  auto x = clustered(2000, kD, 10, 9);
  Memory w = Memory::create(p, {.dim = kD, .index = "IVF8,Flat", .index_fold_rows = 300});
  w.add(ids_of(0, 1000), labels_of(0, 1000), x.data());
  Memory r = Memory::open(p);
  const SearchParams& all = kExhaustive;
  EXPECT_EQ(r.search(x.data() + 5 * kD, 1, 1, {}, 0, &all)[0][0].id, "i5");  // loads the index
  w.add(ids_of(1000, 2000), labels_of(1000, 2000), x.data() + 1000 * kD);  // folded: a new index file
  w.remove({"i5"});
  EXPECT_EQ(r.search(x.data() + 1500 * kD, 1, 1, {}, 0, &all)[0][0].id, "i1500");
  EXPECT_NE(r.search(x.data() + 5 * kD, 1, 1, {}, 0, &all)[0][0].id, "i5");
  EXPECT_EQ(answers(r, x, 20, 10, all), answers(w, x, 20, 10, kExact));
}

TEST(AnnMemoryStore, DamagedIndexFileSaysRebuildAndNeverBlocksRemoval) {
  omp_set_num_threads(1);
  TempDir t;
  const std::string p = t / "m.db";
  auto x = clustered(1200, kD, 10, 10);
  {
    Memory m = Memory::create(p, {.dim = kD, .index = "IVF8,Flat", .index_fold_rows = 300});
    m.add(ids_of(0, 1200), labels_of(0, 1200), x.data());
  }
  const std::string f = index_files(p).at(0);
  std::filesystem::resize_file(f, std::filesystem::file_size(f) / 2);
  {
    Memory m = Memory::open(p);
    try {
      m.search(x.data(), 1, 5, {}, 0, &m.search_params());
      ADD_FAILURE() << "a truncated index file was used";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
    EXPECT_EQ(m.search(x.data(), 1, 1, {}, 0, &kExact)[0][0].id, "i0");  // exact search still works
    m.remove({"i3"});  // drops the damaged index rather than failing
    EXPECT_FALSE(m.index_info()->built);
    EXPECT_TRUE(index_files(p).empty());
    m.rebuild_index();
    EXPECT_EQ(m.index_info(true)->entries, 1199);
    EXPECT_EQ(answers(m, x, 10, 5, kExhaustive), answers(m, x, 10, 5, kExact));
  }
}

TEST(AnnMemoryStore, ShortCandidateListsFallBackToTheExactScan) {
  omp_set_num_threads(1);
  TempDir t;
  auto x = clustered(3000, kD, 30, 12), q = clustered(20, kD, 30, 13);
  Memory m = Memory::create(t / "m.db", {.dim = kD, .index = "IVF64,Flat", .index_fold_rows = 500});
  m.add(ids_of(0, 3000), labels_of(0, 3000), x.data());
  const SearchParams one{.nprobe = 1, .k_factor = 1};
  for (auto& row : m.search(q.data(), 20, 100, {}, 0, &one)) EXPECT_EQ(row.size(), 100u);
  // HNSW after most of the graph is removed: rebuilt once holes pass a quarter, lists stay full.
  Memory h = Memory::create(t / "h.db", {.dim = kD, .index = "HNSW8", .index_fold_rows = 500});
  h.add(ids_of(0, 3000), labels_of(0, 3000), x.data());
  h.remove(ids_of(0, 2000));
  EXPECT_EQ(h.index_info(true)->holes, 0);
  EXPECT_EQ(h.index_info(true)->entries, 1000);
  for (auto& row : h.search(q.data(), 20, 100, {}, 0, &h.search_params())) EXPECT_EQ(row.size(), 100u);
}

TEST(AnnMemoryStore, AnAddNeverFailsAfterItsCommitBecauseOfTheIndex) {
  omp_set_num_threads(1);
  TempDir t;
  const std::string p = t / "m.db";
  auto x = clustered(1500, kD, 10, 14);
  Memory m = Memory::create(p, {.dim = kD, .index = "IVF8,Flat", .index_fold_rows = 300});
  m.add(ids_of(0, 1000), labels_of(0, 1000), x.data());
  std::filesystem::remove(index_files(p).at(0));
  EXPECT_NO_THROW(m.add(ids_of(1000, 1400), labels_of(1000, 1400), x.data() + 1000 * kD));
  EXPECT_EQ(m.size(), 1400);
  auto i = m.index_info();
  EXPECT_FALSE(i->built);
  EXPECT_NE(i->note.find("cannot open"), std::string::npos) << i->note;
  m.rebuild_index();
  EXPECT_TRUE(m.index_info()->note.empty());
  EXPECT_EQ(m.index_info(true)->entries, 1400);
}

TEST(AnnMemoryStore, SetIndexOnAnExistingMemoryAndDropIt) {
  omp_set_num_threads(1);
  TempDir t;
  const std::string p = t / "m.db";
  auto x = clustered(1500, kD, 10, 11);
  Memory m = Memory::create(p, {.dim = kD});
  m.add(ids_of(0, 1500), labels_of(0, 1500), x.data());
  EXPECT_FALSE(m.index_info());
  EXPECT_THROW(m.set_index("IVF8,NoSuchThing"), Error);
  EXPECT_FALSE(m.index_info());
  EXPECT_TRUE(m.set_index("HNSW8"));
  EXPECT_EQ(m.index_info(true)->entries, 1500);
  EXPECT_EQ(index_files(p).size(), 1u);
  EXPECT_FALSE(m.set_index("Flat"));
  EXPECT_FALSE(m.index_info());
  EXPECT_TRUE(index_files(p).empty());
  // Too few items to train: set now, built by the add that gets there.
  Memory s = Memory::create(t / "s.db", {.dim = kD});
  s.add(ids_of(0, 100), labels_of(0, 100), x.data());
  EXPECT_FALSE(s.set_index("IVF64,Flat"));  // needs 39 * 64 = 2496 items
  EXPECT_THROW(s.rebuild_index(), Error);
  EXPECT_FALSE(s.index_info()->built);
}

}  // namespace
