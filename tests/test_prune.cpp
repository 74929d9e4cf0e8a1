// Pruning counts (SPEC section 4) against a brute-force leave-one-out oracle,
// and the hard/soft modes as classify/eval see them.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <map>

#include "eval.h"
#include "memory.h"
#include "prune.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::random_unit;
using vismem::test::TempDir;

TEST(Prune, CountsMatchBruteForceLeaveOneOut) {
  TempDir t;
  const int d = 8, n = 120, k = 5;
  std::vector<float> x = random_unit(n, d, 31);
  std::vector<std::string> ids, labels;
  for (int i = 0; i < n; ++i) {
    ids.push_back("i" + std::to_string(i));
    labels.push_back("c" + std::to_string((i * 7) % 4));
  }
  Memory m = Memory::create(t / "m.db", {.dim = d});
  m.add(ids, labels, x.data());
  Memory::Counts c = compute_prune_counts(m, k);
  std::map<std::string, std::pair<int64_t, int64_t>> oracle;  // id -> (wrong, correct)
  for (int q = 0; q < n; ++q) {
    std::vector<std::pair<float, int>> all;
    for (int j = 0; j < n; ++j) {
      if (j == q) continue;
      float s = 0;
      for (int c2 = 0; c2 < d; ++c2) s += x[q * d + c2] * x[j * d + c2];
      all.emplace_back(1 - s, j);
    }
    std::sort(all.begin(), all.end());
    for (int r = 0; r < k; ++r) {
      auto& o = oracle[ids[all[r].second]];
      (labels[all[r].second] == labels[q] ? o.second : o.first) += 1;
    }
  }
  int64_t total = 0;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    EXPECT_EQ(c.wrong[i], oracle[c.ids[i]].first) << c.ids[i];
    EXPECT_EQ(c.correct[i], oracle[c.ids[i]].second) << c.ids[i];
    total += c.wrong[i] + c.correct[i];
  }
  EXPECT_EQ(total, int64_t(n) * k);
}

TEST(Prune, ModesAndStaleness) {
  TempDir t;
  const int d = 8, n = 60;
  std::vector<float> x = random_unit(n, d, 32);
  std::vector<std::string> ids, labels;
  for (int i = 0; i < n; ++i) {
    ids.push_back("i" + std::to_string(i));
    labels.push_back(i % 3 ? "a" : "b");
  }
  Memory m = Memory::create(t / "m.db", {.dim = d});
  m.add(ids, labels, x.data());
  m.set_counts(compute_prune_counts(m, 10), 10);
  EXPECT_FALSE(m.info().counts_stale());
  m.set_pruning("hard", 3);
  EvalOptions opt;
  apply_memory_pruning(m, opt);
  for (const ItemInfo& it : m.items()) {
    EXPECT_EQ(opt.exclude_ids.count(it.id) > 0, it.wrong >= 3) << it.id;
    EXPECT_DOUBLE_EQ(it.reliability, reliability_weight(it.wrong));
  }
  m.set_pruning("soft", 0);
  EvalOptions soft;
  apply_memory_pruning(m, soft);
  EXPECT_TRUE(soft.exclude_ids.empty());
  for (auto& [id, w] : soft.reliability) EXPECT_DOUBLE_EQ(w, 1.75 / (1.0 + m.item(id)->wrong));
  // Counts and mode persist; a write keeps them current (incremental upkeep).
  Memory again = Memory::open(t / "m.db");
  EXPECT_EQ(again.info().pruning_mode, "soft");
  EXPECT_EQ(again.info().counts_k, 10);
  std::vector<float> y = random_unit(1, d, 33);
  again.add({"new"}, {"a"}, y.data());
  EXPECT_FALSE(again.info().counts_stale());
  EXPECT_TRUE(again.counts_current());
  EXPECT_DOUBLE_EQ(reliability_weight(1), 0.875);
  EXPECT_NEAR(reliability_weight(10), 0.159, 1e-3);
  EXPECT_DOUBLE_EQ(reliability_weight(0), 1.0);
}

namespace {

// Every item's stored counts and kth equal a recount from scratch.
void expect_counts_equal_recount(const Memory& m, const std::string& when) {
  ASSERT_TRUE(m.counts_current()) << when;
  Memory::Counts c = compute_prune_counts(m, m.info().counts_k);
  for (size_t i = 0; i < c.ids.size(); ++i) {
    ItemInfo it = *m.item(c.ids[i]);
    ASSERT_EQ(it.wrong, c.wrong[i]) << when << " " << c.ids[i];
    ASSERT_EQ(it.correct, c.correct[i]) << when << " " << c.ids[i];
    ASSERT_EQ(it.kth, c.kth[i]) << when << " " << c.ids[i];
    ASSERT_DOUBLE_EQ(it.reliability, reliability_weight(c.wrong[i])) << when;
  }
}

}  // namespace

TEST(Prune, IncrementalUpkeepEqualsRecount) {
  TempDir t;
  const int d = 8, n = 400, k = 10;
  std::vector<float> x = random_unit(n, d, 41);
  std::vector<std::string> ids, labels;
  for (int i = 0; i < n; ++i) {
    ids.push_back("i" + std::to_string(i));
    labels.push_back("c" + std::to_string((i * 13) % 5));
  }
  // Exact duplicates of existing vectors: ties at the k-th place.
  for (int i = 0; i < 6; ++i) {
    x.insert(x.end(), x.begin() + i * 7 * d, x.begin() + (i * 7 + 1) * d);
    ids.push_back("dup" + std::to_string(i));
    labels.push_back("c" + std::to_string(i % 5));
  }
  Memory m = Memory::create(t / "m.db", {.dim = d});
  m.add(ids, labels, x.data());
  m.set_counts(compute_prune_counts(m, k), k);
  expect_counts_equal_recount(m, "start");
  std::map<std::string, std::pair<int64_t, int64_t>> before;
  for (auto& it : m.items()) before[it.id] = {it.wrong, it.correct};

  std::vector<float> y = random_unit(9, d, 42);
  m.add({"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}, {"c0", "c1", "c2", "c3", "c4", "c0", "c1", "c9", "c9"}, y.data());
  expect_counts_equal_recount(m, "after add");
  m.remove({"a3", "i5", "i77", "dup2"});
  expect_counts_equal_recount(m, "after remove");
  // Add one and remove it again: every count is back where it was.
  m.remove({"a0", "a1", "a2", "a4", "a5", "a6", "a7", "a8"});
  m.add({"i5", "i77", "dup2"}, {labels[5], labels[77], labels[n + 2]}, [&] {
    std::vector<float> back;
    for (int r : {5, 77, n + 2}) back.insert(back.end(), x.begin() + r * d, x.begin() + (r + 1) * d);
    return back;
  }().data());
  expect_counts_equal_recount(m, "after add/remove round trip");
  // The re-added items are newer now (ties go to the earlier item), so compare
  // with a memory built in this order rather than the original one.
  int64_t same = 0;
  for (auto& it : m.items()) same += before.count(it.id) && before[it.id] == std::pair{it.wrong, it.correct};
  EXPECT_GT(same, n / 2);
  // An upsert (label change in place) and a big batch take the full recount path.
  std::vector<float> z = random_unit(1, d, 43);
  m.add({"i10"}, {"c9"}, z.data(), AddMode::upsert);
  expect_counts_equal_recount(m, "after upsert");
  std::vector<float> big = random_unit(500, d, 44);
  std::vector<std::string> bids, blabels;
  for (int i = 0; i < 500; ++i) {
    bids.push_back("b" + std::to_string(i));
    blabels.push_back("c" + std::to_string(i % 5));
  }
  m.add(bids, blabels, big.data());
  expect_counts_equal_recount(m, "after a batch larger than the memory");
  m.remove_label("c9");
  expect_counts_equal_recount(m, "after removing a label");
  // Upkeep off (many batches, one recount at the end): the counts read stale.
  m.set_counts_upkeep(false);
  std::vector<float> w = random_unit(3, d, 45);
  m.add({"w0", "w1", "w2"}, {"c0", "c1", "c2"}, w.data());
  EXPECT_FALSE(m.counts_current());
  EXPECT_TRUE(m.info().counts_stale());
  m.set_counts(compute_prune_counts(m, k), k);
  m.set_counts_upkeep(true);
  expect_counts_equal_recount(m, "after a deferred recount");
}

TEST(Prune, RemovingFromStaleCountsClearsThem) {
  TempDir t;
  const int d = 8, n = 50;
  std::vector<float> x = random_unit(n, d, 51);
  std::vector<std::string> ids, labels;
  for (int i = 0; i < n; ++i) {
    ids.push_back("i" + std::to_string(i));
    labels.push_back(i % 2 ? "a" : "b");
  }
  {
    Memory m = Memory::create(t / "m.db", {.dim = d});
    m.add(ids, labels, x.data());
    m.set_counts(compute_prune_counts(m, 5), 5);
  }
  // Counts left stale (as after a process killed between a write and its
  // upkeep): bump the generation behind the memory's back.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((t / "m.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = value + 1 WHERE key = 'generation'", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  Memory m = Memory::open(t / "m.db");
  EXPECT_TRUE(m.info().counts_stale());
  m.remove({"i3"});
  // Stale counts would still carry the removed item's votes: they are cleared.
  EXPECT_FALSE(m.info().counts_stale());
  EXPECT_EQ(m.info().counts_generation, -1);
  for (auto& it : m.items()) {
    EXPECT_EQ(it.wrong, 0);
    EXPECT_EQ(it.correct, 0);
    EXPECT_EQ(it.kth, -1);
  }
  Memory again = Memory::open(t / "m.db");
  for (auto& it : again.items()) EXPECT_EQ(it.wrong + it.correct, 0);
}
