// The memory store: validation, atomic writes (a real SIGKILL mid-add), exact
// search against brute force, and unlearning ("removed == never added", bit for
// bit, and no byte of a removed vector left in the database files).
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "aggregate.h"
#include "error.h"
#include "memory.h"
#include "unlearn.h"
#include "npy.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::random_unit;
using vismem::test::TempDir;

namespace {

std::vector<std::string> make_ids(int64_t n, const std::string& prefix = "item") {
  std::vector<std::string> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = prefix + std::to_string(i);
  return ids;
}

std::vector<std::string> make_labels(int64_t n, int classes) {
  std::vector<std::string> l(n);
  for (int64_t i = 0; i < n; ++i) l[i] = "class" + std::to_string(i % classes);
  return l;
}

// Everything a query's answer consists of, for bitwise comparison.
struct Answer {
  std::vector<std::string> ids;
  std::vector<uint32_t> dist_bits;
  std::vector<std::vector<int32_t>> predictions;  // per vote rule, every k
  bool operator==(const Answer&) const = default;
};

std::vector<Answer> answers(const Memory& m, const std::vector<float>& q, int64_t nq, int k) {
  auto res = m.search(q.data(), nq, k);
  std::vector<Answer> out;
  for (const auto& nn : res) {
    Answer a;
    VoteInput in;
    std::vector<std::string> names;
    for (const auto& n : nn) {
      a.ids.push_back(n.id);
      uint32_t b;
      std::memcpy(&b, &n.distance, 4);
      a.dist_bits.push_back(b);
      auto it = std::find(names.begin(), names.end(), n.label);
      in.labels.push_back(static_cast<int32_t>(it - names.begin()));
      if (it == names.end()) names.push_back(n.label);
      in.distances.push_back(n.distance);
    }
    for (Vote v : all_votes) {
      auto p = predict_all_k(v, in);
      std::vector<int32_t> pl;
      a.predictions.push_back(p);
    }
    out.push_back(std::move(a));
  }
  return out;
}

bool contains_bytes(const std::string& hay, const void* needle, size_t n) {
  return std::search(hay.begin(), hay.end(), static_cast<const char*>(needle), static_cast<const char*>(needle) + n) !=
         hay.end();
}

}  // namespace

TEST(Memory, CreateOpenInfo) {
  TempDir t;
  std::string p = t / "m.db";
  {
    Memory m = Memory::create(p, {.dim = 8, .model_id = "test-model"});
    EXPECT_EQ(m.dim(), 8);
    EXPECT_EQ(m.size(), 0);
  }
  EXPECT_THROW(Memory::create(p, {.dim = 8}), Error);  // exists
  Memory m = Memory::open(p);
  MemoryInfo i = m.info();
  EXPECT_EQ(i.dim, 8);
  EXPECT_EQ(i.model_id, "test-model");
  EXPECT_EQ(i.format_version, Memory::format_version);
  EXPECT_FALSE(i.created_at.empty());
  EXPECT_THROW(Memory::open(t / "nope.db"), Error);
  std::ofstream(t / "junk.db") << "this is not a database at all, just some text that is long enough";
  EXPECT_THROW(Memory::open(t / "junk.db"), Error);
  EXPECT_THROW(Memory::create(t / "z.db", {.dim = 0}), Error);
}

TEST(Memory, AddNormalizesAndPersists) {
  TempDir t;
  std::string p = t / "m.db";
  std::vector<float> x = {3, 4, 0, 0, 0, 0, 0, 2};
  {
    Memory m = Memory::create(p, {.dim = 4});
    AddResult r = m.add({"a", "b"}, {"cat", "dog"}, x.data());
    EXPECT_EQ(r.added, 2);
  }
  Memory m = Memory::open(p);
  ASSERT_EQ(m.size(), 2);
  auto e = m.embedding("a");
  EXPECT_FLOAT_EQ(e[0], 0.6f);
  EXPECT_FLOAT_EQ(e[1], 0.8f);
  EXPECT_EQ(m.item("b")->label, "dog");
  EXPECT_EQ(m.labels(), (std::vector<std::string>{"cat", "dog"}));
}

TEST(Memory, BadInputLeavesMemoryUnchanged) {
  TempDir t;
  std::string p = t / "m.db";
  Memory m = Memory::create(p, {.dim = 4});
  std::vector<float> x = random_unit(3, 4, 1);
  m.add({"a", "b", "c"}, {"l", "l", "l"}, x.data());
  auto before = answers(m, x, 3, 3);
  std::vector<float> bad = random_unit(3, 4, 2);
  bad[5] = std::nanf("");
  EXPECT_THROW(m.add({"d", "e", "f"}, {"l", "l", "l"}, bad.data()), Error);
  bad[5] = INFINITY;
  EXPECT_THROW(m.add({"d", "e", "f"}, {"l", "l", "l"}, bad.data()), Error);
  std::vector<float> zero = random_unit(3, 4, 3);
  std::fill(zero.begin() + 4, zero.begin() + 8, 0.0f);
  EXPECT_THROW(m.add({"d", "e", "f"}, {"l", "l", "l"}, zero.data()), Error);
  std::vector<float> ok = random_unit(3, 4, 4);
  EXPECT_THROW(m.add({"d", "d", "f"}, {"l", "l", "l"}, ok.data()), Error);   // duplicate in batch
  EXPECT_THROW(m.add({"d", "a", "f"}, {"l", "l", "l"}, ok.data()), Error);   // duplicate in memory
  EXPECT_THROW(m.add({"d", "e"}, {"l", "l", "l"}, ok.data()), Error);        // lengths
  EXPECT_THROW(m.add({"d", "", "f"}, {"l", "l", "l"}, ok.data()), Error);    // empty id
  EXPECT_EQ(m.size(), 3);
  EXPECT_EQ(answers(m, x, 3, 3), before);
  Memory again = Memory::open(p);
  EXPECT_EQ(again.size(), 3);
  EXPECT_EQ(answers(again, x, 3, 3), before);
}

TEST(Memory, UpsertAndSkipExisting) {
  TempDir t;
  Memory m = Memory::create(t / "m.db", {.dim = 4});
  std::vector<float> x = random_unit(2, 4, 5);
  m.add({"a", "b"}, {"l1", "l2"}, x.data());
  std::vector<float> y = random_unit(2, 4, 6);
  AddResult r = m.add({"a", "c"}, {"new", "l3"}, y.data(), AddMode::upsert);
  EXPECT_EQ(r.replaced, 1);
  EXPECT_EQ(r.added, 1);
  EXPECT_EQ(m.item("a")->label, "new");
  EXPECT_GT(m.item("a")->seq, m.item("c")->seq - 2);  // replaced item is newest-but-one
  EXPECT_FLOAT_EQ(m.embedding("a")[0], y[0]);
  r = m.add({"a", "d"}, {"x", "l4"}, x.data(), AddMode::skip_existing);
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.added, 1);
  EXPECT_EQ(m.item("a")->label, "new");
  EXPECT_EQ(Memory::open(t / "m.db").size(), 4);
}

TEST(Memory, SearchMatchesBruteForce) {
  TempDir t;
  const int d = 32, n = 500, nq = 20, k = 10;
  Memory m = Memory::create(t / "m.db", {.dim = d});
  std::vector<float> x = random_unit(n, d, 7);
  m.add(make_ids(n), make_labels(n, 5), x.data());
  std::vector<float> q = random_unit(nq, d, 8);
  auto res = m.search(q.data(), nq, k);
  for (int i = 0; i < nq; ++i) {
    std::vector<std::pair<double, int>> all;
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int c = 0; c < d; ++c) s += double(q[i * d + c]) * x[j * d + c];
      all.emplace_back(1 - s, j);
    }
    std::sort(all.begin(), all.end());
    ASSERT_EQ(res[i].size(), size_t(k));
    for (int r = 0; r < k; ++r) {
      EXPECT_NEAR(res[i][r].distance, all[r].first, 1e-5);
      if (r + 1 < k && all[r + 1].first - all[r].first > 1e-5) EXPECT_EQ(res[i][r].id, "item" + std::to_string(all[r].second));
    }
  }
  // k > N gives N results
  auto few = m.search(q.data(), 1, 1000);
  EXPECT_EQ(few[0].size(), size_t(n));
}

TEST(Memory, TiesGoToTheEarlierItem) {
  TempDir t;
  Memory m = Memory::create(t / "m.db", {.dim = 4});
  std::vector<float> v = {1, 0, 0, 0};
  m.add({"late"}, {"b"}, v.data());
  m.add({"later"}, {"c"}, v.data());
  m.add({"first?"}, {"a"}, v.data());
  auto res = m.search(v.data(), 1, 3);
  EXPECT_EQ(res[0][0].id, "late");
  EXPECT_EQ(res[0][1].id, "later");
  EXPECT_EQ(res[0][2].id, "first?");
}

TEST(Memory, ExcludeSelf) {
  TempDir t;
  const int d = 16, n = 50;
  Memory m = Memory::create(t / "m.db", {.dim = d});
  std::vector<float> x = random_unit(n, d, 9);
  auto ids = make_ids(n);
  m.add(ids, make_labels(n, 3), x.data());
  auto plain = m.search(x.data(), n, 5);
  auto loo = m.search(x.data(), n, 5, ids);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(plain[i][0].id, ids[i]);  // itself first
    ASSERT_EQ(loo[i].size(), 5u);
    for (auto& nb : loo[i]) EXPECT_NE(nb.id, ids[i]);
    for (int r = 0; r < 5; ++r) EXPECT_EQ(loo[i][r].id, m.search(x.data() + i * d, 1, 6)[0][r + 1].id);
  }
  // A query id not in the memory: the last of k+1 is dropped.
  std::vector<float> q = random_unit(1, d, 10);
  auto other = m.search(q.data(), 1, 5, {"not-in-memory"});
  auto ref = m.search(q.data(), 1, 5);
  EXPECT_EQ(other[0].size(), 5u);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(other[0][r].id, ref[0][r].id);
}

TEST(Memory, RemovedEqualsNeverAdded) {
  TempDir t;
  const int d = 64, n = 400, classes = 7;
  std::vector<float> x = random_unit(n, d, 11);
  auto ids = make_ids(n);
  auto labels = make_labels(n, classes);
  std::vector<std::string> gone;
  for (int i = 0; i < n; i += 9) gone.push_back(ids[i]);
  // Memory A: everything, in two batches, then remove.
  Memory a = Memory::create(t / "a.db", {.dim = d});
  std::vector<std::string> i1(ids.begin(), ids.begin() + 200), i2(ids.begin() + 200, ids.end());
  std::vector<std::string> l1(labels.begin(), labels.begin() + 200), l2(labels.begin() + 200, labels.end());
  a.add(i1, l1, x.data());
  a.add(i2, l2, x.data() + 200 * d);
  EXPECT_EQ(a.remove(gone), int64_t(gone.size()));
  // Memory B: never had them.
  Memory b = Memory::create(t / "b.db", {.dim = d});
  std::vector<std::string> bi, bl;
  std::vector<float> bx;
  for (int i = 0; i < n; ++i) {
    if (i % 9 == 0) continue;
    bi.push_back(ids[i]);
    bl.push_back(labels[i]);
    bx.insert(bx.end(), x.begin() + i * d, x.begin() + (i + 1) * d);
  }
  b.add(bi, bl, bx.data());
  // Queries: fresh ones and the removed items themselves (their old neighborhoods).
  std::vector<float> q = random_unit(30, d, 12);
  for (int i = 0; i < n; i += 9) q.insert(q.end(), x.begin() + i * d, x.begin() + (i + 1) * d);
  int64_t nq = static_cast<int64_t>(q.size()) / d;
  EXPECT_EQ(answers(a, q, nq, 50), answers(b, q, nq, 50));
  // Also after reopening from disk.
  Memory a2 = Memory::open(t / "a.db");
  EXPECT_EQ(answers(a2, q, nq, 50), answers(b, q, nq, 50));
  for (const auto& g : gone) EXPECT_FALSE(a2.contains(g));
}

TEST(Memory, RemovedBytesAreGoneFromDisk) {
  TempDir t;
  const int d = 256, n = 300;
  std::string p = t / "m.db";
  std::vector<float> x = random_unit(n, d, 13);
  Memory m = Memory::create(p, {.dim = d});
  m.add(make_ids(n), make_labels(n, 4), x.data());
  std::vector<float> victim = m.embedding("item17");  // stored (normalized) bytes
  std::vector<float> keep = m.embedding("item18");
  auto all_bytes = [&] {
    std::string b;
    for (const auto& f : Memory::files(p))
      if (std::filesystem::exists(f)) b += test::read_file(f);
    return b;
  };
  std::string before = all_bytes();
  ASSERT_TRUE(contains_bytes(before, victim.data(), 64));  // the scan can see stored vectors
  std::vector<float> extra = random_unit(1, d, 99);
  m.add({"unique-id-Q7"}, {"secret-label-Z9"}, extra.data());
  m.remove({"item17", "unique-id-Q7"});
  std::string after = all_bytes();
  // No 16-byte piece of the removed vector survives anywhere in the files.
  for (int off = 0; off + 4 <= d; off += 4)
    EXPECT_FALSE(contains_bytes(after, victim.data() + off, 16)) << "bytes of floats " << off << ".." << off + 3;
  EXPECT_TRUE(contains_bytes(after, keep.data(), 64));
  EXPECT_FALSE(contains_bytes(after, "unique-id-Q7", 12));
  EXPECT_FALSE(contains_bytes(after, "secret-label-Z9", 15));
  // By label too.
  std::vector<float> c1 = m.embedding("item1");
  m.remove_label("class1");
  std::string after2 = all_bytes();
  EXPECT_FALSE(contains_bytes(after2, c1.data(), 64));
}

TEST(Memory, RemoveUnknownIdChangesNothing) {
  TempDir t;
  Memory m = Memory::create(t / "m.db", {.dim = 4});
  std::vector<float> x = random_unit(2, 4, 14);
  m.add({"a", "b"}, {"l", "l"}, x.data());
  EXPECT_THROW(m.remove({"a", "zzz"}), Error);
  EXPECT_EQ(m.size(), 2);
  EXPECT_EQ(m.remove({"a", "zzz"}, true), 1);
  EXPECT_THROW(m.remove_label("nolabel"), Error);
}

// A real SIGKILL of a child `vismem add` in the middle of a large transaction.
TEST(Memory, KilledAddLeavesMemoryAsBefore) {
  TempDir t;
  const int d = 256;
  const int64_t small = 100, big = 60000;  // 60k * 1 KiB: the add takes seconds
  std::string p = t / "m.db";
  std::vector<float> x = random_unit(small, d, 15);
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(make_ids(small, "old"), make_labels(small, 3), x.data());
  }
  std::vector<float> y = random_unit(big, d, 16);
  write_npy_f32(t / "big.npy", y.data(), {big, d});
  write_lines(t / "big_labels.txt", make_labels(big, 3));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(VISMEM_CLI_PATH, VISMEM_CLI_PATH, "add", p.c_str(), "--embeddings", (t / "big.npy").c_str(), "--labels",
          (t / "big_labels.txt").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill once a few MB of rows are in the vector file (the catalog commits only at the end).
  std::string wal = p + ".vec";
  bool killed = false;
  for (int i = 0; i < 6000; ++i) {
    std::error_code ec;
    auto sz = std::filesystem::file_size(wal, ec);
    if (!ec && sz > 8u << 20) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) break;  // finished before we could kill it
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "the add finished before it could be killed";
  ASSERT_TRUE(WIFSIGNALED(status));
  Memory m = Memory::open(p);
  EXPECT_EQ(m.size(), small);
  for (int64_t i = 0; i < small; ++i) EXPECT_TRUE(m.contains("old" + std::to_string(i)));
  EXPECT_FALSE(m.contains("big.npy#0"));
  // And it still works.
  std::vector<float> z = random_unit(1, d, 17);
  m.add({"new"}, {"l"}, z.data());
  EXPECT_EQ(Memory::open(p).size(), small + 1);
}

TEST(Memory, ByteScanFindsAnyWindowAtAnyOffset) {
  // The unlearning receipt's scanner against planted copies: a 64-byte window
  // of one of many vectors, at an odd offset, inside random bytes.
  const int d = 64;
  std::vector<std::vector<float>> vecs;
  std::vector<float> all = random_unit(40, d, 77);
  for (int i = 0; i < 40; ++i) vecs.emplace_back(all.begin() + i * d, all.begin() + (i + 1) * d);
  vecs[3][20] = 0.0f;  // zeros inside a window are fine
  std::mt19937 g(3);
  std::string bytes(1 << 20, '\0');
  for (auto& c : bytes) c = static_cast<char>(g());
  EXPECT_FALSE(contains_embedding_bytes(bytes, vecs, d));
  std::string planted = bytes;
  std::memcpy(planted.data() + 123457, vecs[3].data() + 16, 64);  // floats 16..31 of vector 3
  EXPECT_TRUE(contains_embedding_bytes(planted, vecs, d));
  // A window cut short by the end of the bytes is not a match; a whole one at the very end is.
  std::string tail = bytes.substr(0, 1000) + std::string(reinterpret_cast<const char*>(vecs[39].data() + 48), 60);
  EXPECT_FALSE(contains_embedding_bytes(tail, vecs, d));
  tail = bytes.substr(0, 1001) + std::string(reinterpret_cast<const char*>(vecs[39].data() + 48), 64);
  EXPECT_TRUE(contains_embedding_bytes(tail, vecs, d));
  // All-zero vectors never match zeroed pages.
  EXPECT_FALSE(contains_embedding_bytes(std::string(4096, '\0'), {std::vector<float>(d, 0.0f)}, d));
}
