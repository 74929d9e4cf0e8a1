// Pruning counts (SPEC section 4) against a brute-force leave-one-out oracle,
// and the hard/soft modes as classify/eval see them.
#include <gtest/gtest.h>

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
  // Counts and mode persist; a write makes them stale.
  Memory again = Memory::open(t / "m.db");
  EXPECT_EQ(again.info().pruning_mode, "soft");
  EXPECT_EQ(again.info().counts_k, 10);
  std::vector<float> y = random_unit(1, d, 33);
  again.add({"new"}, {"a"}, y.data());
  EXPECT_TRUE(again.info().counts_stale());
  EXPECT_DOUBLE_EQ(reliability_weight(1), 0.875);
  EXPECT_NEAR(reliability_weight(10), 0.159, 1e-3);
  EXPECT_DOUBLE_EQ(reliability_weight(0), 1.0);
}
