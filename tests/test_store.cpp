// The store's promises on its files (format 2): one truth across handles and
// processes, serialized writers with exact derived state, crash points on
// both sides of every commit, unlearning from every file while readers hold
// the catalog, migration of format 1, foreign and damaged files.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "error.h"
#include "memory.h"
#include "npy.h"
#include "prune.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::TempDir;
using vismem::test::random_unit;

namespace {

std::vector<std::string> ids_of(int64_t n, const std::string& prefix) {
  std::vector<std::string> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}
std::vector<std::string> labels_of(int64_t n, int classes) {
  std::vector<std::string> v;
  for (int64_t i = 0; i < n; ++i) v.push_back("c" + std::to_string(i % classes));
  return v;
}

// Every answer of a memory for some queries: ids and distance bits.
std::vector<std::string> answers(const Memory& m, const std::vector<float>& q, int64_t nq, int k) {
  std::vector<std::string> out;
  for (auto& row : m.search(q.data(), nq, k)) {
    std::string s;
    for (auto& n : row) {
      uint32_t bits;
      std::memcpy(&bits, &n.distance, 4);
      s += n.id + "/" + n.label + "/" + std::to_string(bits) + " ";
    }
    out.push_back(s);
  }
  return out;
}

std::string all_bytes(const std::string& p) {
  std::string b;
  for (const auto& f : Memory::files(p))
    if (std::filesystem::exists(f) && f.find(".lock") == std::string::npos) b += test::read_file(f);
  return b;
}
bool contains_bytes(const std::string& hay, const void* needle, size_t n) {
  return hay.find(std::string(static_cast<const char*>(needle), n)) != std::string::npos;
}

int run_env(const std::string& env, const std::string& args) {
  std::string cmd = env + " " + VISMEM_CLI_PATH + " " + args + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST(Store, OpenReadsNoVectorsAndFilesAreAsDocumented) {
  TempDir t;
  const int d = 40;  // not a multiple of 16: rows are padded to 48 floats
  std::string p = t / "m.db";
  auto x = random_unit(10, d, 1);
  Memory m = Memory::create(p, {.dim = d});
  m.add(ids_of(10, "i"), labels_of(10, 2), x.data());
  for (const char* s : {"", ".vec", ".keys", ".lock"}) EXPECT_TRUE(std::filesystem::exists(p + s)) << s;
  EXPECT_FALSE(std::filesystem::exists(p + ".f16"));
  EXPECT_EQ(std::filesystem::file_size(p + ".vec"), 4096u + 10u * 48 * 4);
  EXPECT_EQ(std::filesystem::file_size(p + ".keys"), 4096u + 10u * 8);
  MemoryInfo i = m.info();
  EXPECT_EQ(i.format_version, 2);
  EXPECT_EQ(i.rows, 10);
  EXPECT_EQ(i.items, 10);
  EXPECT_EQ(i.labels, 2);
  // The stored row is the normalized input, bit for bit.
  std::vector<float> e = Memory::open(p).embedding("i3");
  std::vector<float> want(x.begin() + 3 * d, x.begin() + 4 * d);
  l2_normalize_rows(want.data(), 1, d, "t");
  EXPECT_EQ(std::memcmp(e.data(), want.data(), d * 4), 0);
}

TEST(Store, EveryHandleAnswersFromTheLatestCommit) {
  TempDir t;
  const int d = 32;
  std::string p = t / "m.db";
  auto x = random_unit(200, d, 2);
  Memory a = Memory::create(p, {.dim = d});
  a.add(ids_of(100, "i"), labels_of(100, 5), x.data());
  Memory b = Memory::open(p);
  // b adds: a sees the items, the count, the labels, without reopening.
  b.add(ids_of(100, "j"), labels_of(100, 7), x.data() + 100 * d);
  EXPECT_EQ(a.size(), 200);
  EXPECT_EQ(a.info().labels, 7);
  EXPECT_TRUE(a.contains("j42"));
  auto nn = a.search(x.data() + 142 * d, 1, 1);
  ASSERT_EQ(nn[0].size(), 1u);
  EXPECT_EQ(nn[0][0].id, "j42");
  EXPECT_FLOAT_EQ(nn[0][0].distance, 0.0f);
  // b removes: gone for a (search, contains, size), and a cannot remove it again.
  b.remove({"j42"});
  EXPECT_FALSE(a.contains("j42"));
  EXPECT_EQ(a.size(), 199);
  nn = a.search(x.data() + 142 * d, 1, 1);
  EXPECT_NE(nn[0][0].id, "j42");
  EXPECT_THROW(a.remove({"j42"}), Error);
  // An upsert by b (new label, new vector) shows in a; a's own add after that works.
  auto y = random_unit(1, d, 99);
  b.add({"i7"}, {"relabeled"}, y.data(), AddMode::upsert);
  EXPECT_EQ(a.item("i7")->label, "relabeled");
  nn = a.search(y.data(), 1, 2);
  EXPECT_EQ(nn[0][0].id, "i7");
  EXPECT_NO_THROW(a.add({"k0"}, {"l"}, x.data()));
  EXPECT_EQ(b.size(), 200);
  // Both handles answer exactly like a fresh one and like a memory built from scratch.
  Memory c = Memory::open(p);
  std::vector<float> q = random_unit(20, d, 3);
  EXPECT_EQ(answers(a, q, 20, 30), answers(c, q, 20, 30));
  EXPECT_EQ(answers(b, q, 20, 30), answers(c, q, 20, 30));
  Memory fresh = Memory::create(t / "fresh.db", {.dim = d});
  std::vector<std::string> fid, flab;
  std::vector<float> fx;
  for (const ItemInfo& it : c.items()) {
    fid.push_back(it.id);
    flab.push_back(it.label);
    auto e = c.embedding(it.id);
    fx.insert(fx.end(), e.begin(), e.end());
  }
  fresh.add(fid, flab, fx.data());
  auto strip = [](std::vector<std::string> v) { return v; };
  EXPECT_EQ(strip(answers(fresh, q, 20, 30)), strip(answers(c, q, 20, 30)));
}

TEST(Store, ConcurrentWritersSerializeAndKeepCountsExact) {
  TempDir t;
  const int d = 24, base = 200, each = 300;
  std::string p = t / "m.db";
  auto x = random_unit(base + 2 * each, d, 4);
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(ids_of(base, "b"), labels_of(base, 4), x.data());
    m.set_counts(compute_prune_counts(m, 10), 10);
  }
  write_npy_f32(t / "w0.npy", x.data() + base * d, {each, d});
  write_npy_f32(t / "w1.npy", x.data() + (base + each) * d, {each, d});
  for (int w = 0; w < 2; ++w) {
    write_lines(t / ("ids" + std::to_string(w) + ".txt"), ids_of(each, "w" + std::to_string(w) + "_"));
    write_lines(t / ("labels" + std::to_string(w) + ".txt"), labels_of(each, 4));
  }
  // Two processes, each adding its items in 10 batches of 30.
  std::vector<pid_t> kids;
  for (int w = 0; w < 2; ++w) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        Memory m = Memory::open(p);
        NpyArray a = read_npy(t / ("w" + std::to_string(w) + ".npy"));
        auto xs = a.to_float();
        auto ids = read_lines(t / ("ids" + std::to_string(w) + ".txt"));
        auto labels = read_lines(t / ("labels" + std::to_string(w) + ".txt"));
        for (int b = 0; b < 10; ++b) {
          std::vector<std::string> bi(ids.begin() + b * 30, ids.begin() + (b + 1) * 30);
          std::vector<std::string> bl(labels.begin() + b * 30, labels.begin() + (b + 1) * 30);
          m.add(bi, bl, xs.data() + b * 30 * d);
        }
        _exit(m.size() >= base + each ? 0 : 2);
      } catch (...) {
        _exit(3);
      }
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int st = 0;
    waitpid(k, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "writer status " << st;
  }
  Memory m = Memory::open(p);
  EXPECT_EQ(m.size(), base + 2 * each);
  EXPECT_TRUE(m.counts_current());
  Memory::Counts want = compute_prune_counts(m, 10);
  int64_t differ = 0;
  for (size_t i = 0; i < want.ids.size(); ++i) {
    ItemInfo it = *m.item(want.ids[i]);
    differ += it.wrong != want.wrong[i] || it.correct != want.correct[i];
  }
  EXPECT_EQ(differ, 0) << "items whose counts differ from a recount";
}

TEST(Store, CountsComputedOnAnOlderStateAreRefused) {
  TempDir t;
  const int d = 16;
  std::string p = t / "m.db";
  auto x = random_unit(60, d, 5);
  Memory a = Memory::create(p, {.dim = d});
  a.add(ids_of(50, "i"), labels_of(50, 3), x.data());
  Memory::Counts c = compute_prune_counts(a, 5);
  Memory b = Memory::open(p);
  b.add({"late"}, {"c0"}, x.data() + 55 * d);  // another writer in between
  EXPECT_THROW(a.set_counts(c, 5, "hard", 3), Error);
  EXPECT_EQ(a.info().counts_generation, -1);
  EXPECT_EQ(a.pruning_mode(), "none");
  // Counts and mode land together.
  a.set_counts(compute_prune_counts(a, 5), 5, "hard", 3);
  MemoryInfo i = Memory::open(p).info();
  EXPECT_EQ(i.pruning_mode, "hard");
  EXPECT_EQ(i.counts_generation, i.generation);
}

TEST(Store, CrashBeforeAndAfterCommitLeaveBeforeOrAfter) {
  TempDir t;
  const int d = 32, n = 50;
  std::string p = t / "m.db";
  auto x = random_unit(2 * n, d, 6);
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(ids_of(n, "old"), labels_of(n, 3), x.data());
  }
  write_npy_f32(t / "new.npy", x.data() + n * d, {n, d});
  write_lines(t / "labels.txt", labels_of(n, 3));
  const std::string add = "add " + p + " --embeddings " + t / "new.npy" + " --labels " + t / "labels.txt";
  const auto vec_size_before = std::filesystem::file_size(p + ".vec");
  // Dies after writing the rows, before the commit: the memory is as before,
  // and the next open cuts the rows nobody references.
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=add-before-commit", add), 137);
  EXPECT_GT(std::filesystem::file_size(p + ".vec"), vec_size_before);
  {
    Memory m = Memory::open(p);
    EXPECT_EQ(m.size(), n);
    EXPECT_FALSE(m.contains("new.npy#0"));
    EXPECT_EQ(std::filesystem::file_size(p + ".vec"), vec_size_before);
    EXPECT_FALSE(contains_bytes(all_bytes(p), x.data() + n * d + 16, 64)) << "rows of the lost add left behind";
  }
  // Dies right after the commit: the add happened.
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=add-after-commit", add), 137);
  {
    Memory m = Memory::open(p);
    EXPECT_EQ(m.size(), 2 * n);
    EXPECT_TRUE(m.contains("new.npy#7"));
  }
  // A removal that dies after its commit, before any byte is overwritten: the
  // item is gone for every reader at once, and the next open scrubs its rows.
  std::vector<float> victim = Memory::open(p).embedding("old3");
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=remove-after-commit", "remove " + p + " --id old3"), 137);
  EXPECT_TRUE(contains_bytes(all_bytes(p), victim.data() + 16, 64));  // not yet scrubbed
  {
    Memory m = Memory::open(p);
    EXPECT_FALSE(m.contains("old3"));
    EXPECT_EQ(m.size(), 2 * n - 1);
    for (int off = 0; off + 16 <= d; off += 4)
      EXPECT_FALSE(contains_bytes(all_bytes(p), victim.data() + off, 64)) << off;
  }
  // Killed in the middle of the scrub: the same.
  auto z = random_unit(1, d, 61);
  Memory::open(p).add({"unique-Z1"}, {"c1"}, z.data());
  std::vector<float> v2 = Memory::open(p).embedding("unique-Z1");
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=scrub", "remove " + p + " --id unique-Z1"), 137);
  {
    Memory m = Memory::open(p);
    EXPECT_FALSE(m.contains("unique-Z1"));
    EXPECT_FALSE(contains_bytes(all_bytes(p), v2.data() + 16, 64));
    EXPECT_FALSE(contains_bytes(all_bytes(p), "unique-Z1", 9));
  }
}

TEST(Store, PendingScrubIsNeverAnswered) {
  TempDir t;
  const int d = 16;
  std::string p = t / "m.db";
  auto x = random_unit(20, d, 7);
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(ids_of(20, "i"), labels_of(20, 2), x.data());
  }
  Memory reader = Memory::open(p);  // opened before: it must not answer the removed item either
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=remove-after-commit", "remove " + p + " --id i5"), 137);
  auto nn = reader.search(x.data() + 5 * d, 1, 20);
  ASSERT_EQ(nn[0].size(), 19u);
  for (auto& n : nn[0]) EXPECT_NE(n.id, "i5");
}

TEST(Store, ReaderHoldingTheCatalogDoesNotFailRemove) {
  TempDir t;
  const int d = 64;
  std::string p = t / "m.db";
  auto x = random_unit(30, d, 8);
  Memory m = Memory::create(p, {.dim = d});
  m.add(ids_of(30, "i"), labels_of(30, 3), x.data());
  m.add({"secret-id-77"}, {"c0"}, random_unit(1, d, 9).data());
  std::vector<float> victim = m.embedding("secret-id-77");
  // Another connection holds a read transaction (an old snapshot) throughout.
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(p.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "BEGIN; SELECT count(*) FROM items;", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_EQ(m.remove({"secret-id-77"}), 1);  // no error after the commit
  EXPECT_FALSE(m.contains("secret-id-77"));
  // The vectors are gone from every file at once; the catalog's old page waits for the reader.
  for (int off = 0; off + 16 <= d; off += 4) EXPECT_FALSE(contains_bytes(all_bytes(p), victim.data() + off, 64));
  sqlite3_exec(h, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(h);
  // The next open (any process) finishes the catalog's scrub.
  Memory::open(p);
  EXPECT_FALSE(contains_bytes(all_bytes(p), "secret-id-77", 12));
}

TEST(Store, Float16CopyGivesTheSameAnswers) {
  TempDir t;
  const int d = 48;
  auto x = random_unit(500, d, 10);
  Memory a = Memory::create(t / "a.db", {.dim = d});
  Memory b = Memory::create(t / "b.db", {.dim = d, .f16 = true});
  a.add(ids_of(500, "i"), labels_of(500, 5), x.data());
  b.add(ids_of(500, "i"), labels_of(500, 5), x.data());
  EXPECT_TRUE(std::filesystem::exists(t / "b.db.f16"));
  EXPECT_TRUE(b.info().f16);
  a.remove({"i3", "i99"});
  b.remove({"i3", "i99"});
  auto q = random_unit(8, d, 11);
  for (int nq : {1, 3, 8}) EXPECT_EQ(answers(a, q, nq, 25), answers(b, q, nq, 25)) << nq;
  EXPECT_EQ(answers(a, q, 8, 25), answers(Memory::open(t / "b.db"), q, 8, 25));
}

TEST(Store, MigratesFormatOneInPlace) {
  TempDir t;
  const int d = 20, n = 40;
  std::string p = t / "v1.db";
  auto x = random_unit(n, d, 12);
  std::vector<float> xn = x;
  l2_normalize_rows(xn.data(), n, d, "t");
  {  // A format-1 memory as the previous vismem wrote it: vectors as blobs.
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(p.c_str(), &h), SQLITE_OK);
    sqlite3_exec(h,
                 "PRAGMA journal_mode=WAL; CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                 "CREATE TABLE items(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, label TEXT NOT NULL,"
                 " embedding BLOB NOT NULL, reliability REAL NOT NULL DEFAULT 1.0, wrong INTEGER NOT NULL DEFAULT 0,"
                 " correct INTEGER NOT NULL DEFAULT 0, added_at TEXT NOT NULL);"
                 "INSERT INTO meta VALUES('format_version','1'),('dim','20'),('model_id','m'),('fingerprint',''),"
                 "('model_path',''),('created_at','x'),('updated_at','x'),('generation','3'),('counts_generation','-1'),"
                 "('counts_k','0'),('pruning_mode','none'),('pruning_threshold','0');",
                 nullptr, nullptr, nullptr);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(h, "INSERT INTO items(id,label,embedding,added_at) VALUES(?,?,?,'x')", -1, &s, nullptr);
    for (int i = 0; i < n + 2; ++i) {
      std::string id = "i" + std::to_string(i), label = "c" + std::to_string(i % 3);
      sqlite3_bind_text(s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(s, 2, label.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(s, 3, xn.data() + (i % n) * d, d * 4, SQLITE_TRANSIENT);
      sqlite3_step(s);
      sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    // Two removed items leave gaps in the insertion sequence.
    sqlite3_exec(h, "DELETE FROM items WHERE id IN ('i40','i41')", nullptr, nullptr, nullptr);
    sqlite3_close(h);
  }
  try {
    Memory::open(p);
    FAIL() << "format 1 opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vismem migrate"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(Memory::migrate(p));
  EXPECT_FALSE(Memory::migrate(p));
  Memory m = Memory::open(p);
  EXPECT_EQ(m.size(), n);
  EXPECT_EQ(m.info().labels, 3);
  EXPECT_EQ(m.info().generation, 3);
  Memory fresh = Memory::create(t / "fresh.db", {.dim = d});
  fresh.add(ids_of(n, "i"), labels_of(n, 3), x.data());
  auto q = random_unit(10, d, 13);
  EXPECT_EQ(answers(m, q, 10, 15), answers(fresh, q, 10, 15));
  // The blobs' bytes left the catalog file.
  EXPECT_FALSE(contains_bytes(test::read_file(p), xn.data() + 5 * d, 64));
  // And it is a working memory.
  m.remove({"i1"});
  m.add({"new"}, {"c9"}, x.data());
  EXPECT_EQ(Memory::open(p).size(), n);
}

TEST(Store, ForeignAndDamagedFilesAreRefusedUntouched) {
  TempDir t;
  // A foreign SQLite file (rollback journal): refused, not switched to WAL, not changed.
  std::string f = t / "other.db";
  {
    sqlite3* h = nullptr;
    sqlite3_open(f.c_str(), &h);
    sqlite3_exec(h, "CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES('hello');", nullptr, nullptr, nullptr);
    sqlite3_close(h);
  }
  std::string before = test::read_file(f);
  EXPECT_THROW(Memory::open(f), Error);
  EXPECT_NE(test::run_cli("info " + f).exit_code, 0);
  EXPECT_EQ(test::read_file(f), before);
  EXPECT_FALSE(std::filesystem::exists(f + "-wal"));
  EXPECT_FALSE(std::filesystem::exists(f + ".vec"));
  // Not SQLite at all.
  std::string junk = t / "junk.db";
  std::ofstream(junk) << "not a database";
  EXPECT_THROW(Memory::open(junk), Error);
  EXPECT_EQ(test::read_file(junk), "not a database");
  // A vector file cut short or missing: a clear error, not a crash.
  const int d = 16;
  std::string p = t / "m.db";
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(ids_of(10, "i"), labels_of(10, 2), random_unit(10, d, 14).data());
  }
  std::filesystem::resize_file(p + ".vec", 4096 + 5 * 16 * 4);
  try {
    Memory::open(p);
    FAIL() << "opened a truncated vector file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::filesystem::remove(p + ".vec");
  EXPECT_THROW(Memory::open(p), Error);
}

TEST(Store, CompactDropsRemovedRowsAndChangesNoAnswer) {
  TempDir t;
  const int d = 32;
  std::string p = t / "m.db";
  auto x = random_unit(300, d, 15);
  Memory m = Memory::create(p, {.dim = d, .f16 = true});
  m.add(ids_of(300, "i"), labels_of(300, 6), x.data());
  m.set_counts(compute_prune_counts(m, 7), 7);
  std::vector<std::string> gone;
  for (int i = 0; i < 300; i += 3) gone.push_back("i" + std::to_string(i));
  m.remove(gone);
  m.add({"i1"}, {"moved"}, random_unit(1, d, 16).data(), AddMode::upsert);  // a replaced row too
  Memory other = Memory::open(p);  // opened before: must follow the switch
  auto q = random_unit(12, d, 17);
  auto before = answers(m, q, 12, 40);
  ASSERT_EQ(m.info().rows, 301);
  EXPECT_EQ(m.compact(), 101);
  EXPECT_EQ(m.compact(), 0);
  EXPECT_EQ(m.info().rows, 200);
  EXPECT_EQ(m.size(), 200);
  EXPECT_TRUE(m.counts_current());
  EXPECT_EQ(answers(m, q, 12, 40), before);
  EXPECT_EQ(answers(other, q, 12, 40), before);
  EXPECT_EQ(answers(Memory::open(p), q, 12, 40), before);
  // One set of vector files, the new one, sized for the live rows.
  int sets = 0;
  for (const auto& f : Memory::files(p))
    if (std::filesystem::exists(f) && f.size() > 4 && f.substr(f.size() - 4) == ".vec") {
      ++sets;
      EXPECT_EQ(std::filesystem::file_size(f), 4096u + 200u * 32 * 4) << f;
    }
  EXPECT_EQ(sets, 1);
  // Writes go on after it, in this handle and in the one opened before.
  other.add({"late"}, {"c0"}, x.data());
  m.remove({"i2"});
  EXPECT_EQ(Memory::open(p).size(), 200);
  // Moved with its files.
  Memory::rename_files(p, t / "moved.db");
  EXPECT_EQ(Memory::open(t / "moved.db").size(), 200);
}

TEST(Store, CompactKilledBeforeOrAfterItsCommit) {
  TempDir t;
  const int d = 16;
  std::string p = t / "m.db";
  auto x = random_unit(100, d, 18);
  {
    Memory m = Memory::create(p, {.dim = d});
    m.add(ids_of(100, "i"), labels_of(100, 4), x.data());
    m.remove({"i3", "i50", "i99"});
  }
  auto q = random_unit(5, d, 19);
  auto before = answers(Memory::open(p), q, 5, 20);
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=compact-before-commit", "compact " + p), 137);
  {
    Memory m = Memory::open(p);
    EXPECT_EQ(m.info().rows, 100);
    EXPECT_EQ(answers(m, q, 5, 20), before);
  }
  int vec_files = 0;
  for (const auto& f : Memory::files(p)) vec_files += std::filesystem::exists(f) && f.substr(f.size() - 4) == ".vec";
  EXPECT_EQ(vec_files, 1) << "the uncommitted set was not cleaned up";
  EXPECT_EQ(run_env("VISMEM_CRASH_AT=compact-after-commit", "compact " + p), 137);
  {
    Memory m = Memory::open(p);
    EXPECT_EQ(m.info().rows, 97);
    EXPECT_EQ(answers(m, q, 5, 20), before);
  }
  vec_files = 0;
  for (const auto& f : Memory::files(p)) vec_files += std::filesystem::exists(f) && f.substr(f.size() - 4) == ".vec";
  EXPECT_EQ(vec_files, 1) << "the old set was not cleaned up";
}

TEST(Store, RelativePathsThroughCompaction) {
  // Names are compared as spelled: a memory opened as "m.db" (not an absolute
  // path) must keep its current vector files through compact and reopen.
  TempDir t;
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(t.path);
  auto x = random_unit(50, 8, 20);
  {
    Memory m = Memory::create("m.db", {.dim = 8});
    m.add(ids_of(50, "i"), labels_of(50, 2), x.data());
    m.remove({"i0", "i1"});
    EXPECT_EQ(m.compact(), 2);
    EXPECT_EQ(m.size(), 48);
  }
  {
    Memory m = Memory::open("m.db");
    EXPECT_EQ(m.size(), 48);
    EXPECT_EQ(m.search(x.data() + 8 * 9, 1, 1)[0][0].id, "i9");
    EXPECT_EQ(m.compact(), 0);
  }
  EXPECT_EQ(test::run_cli("info m.db").exit_code, 0);
  EXPECT_EQ(Memory::open(t / "m.db").size(), 48);
  std::filesystem::current_path(cwd);
}
