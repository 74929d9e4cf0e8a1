// Team (fork-join helper threads): every item runs exactly once, on a valid
// worker, for many consecutive jobs, including more threads than cores.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "team.h"

using vismem::Team;

TEST(Team, EveryItemRunsExactlyOnceAcrossManyJobs) {
  const int threads = static_cast<int>(std::thread::hardware_concurrency()) + 2;  // oversubscribed on purpose
  Team team(threads);
  ASSERT_EQ(team.size(), threads);
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    for (int job = 0; job < 50; ++job) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> bad_worker{0};
      team.run(n, [&](int64_t i, int worker) {
        hits[i].fetch_add(1);
        if (worker < 0 || worker >= threads) bad_worker.fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " job " << job << " item " << i;
      ASSERT_EQ(bad_worker.load(), 0);
    }
  }
}

TEST(Team, HelpersShareTheWork) {
  Team team(2);
  std::vector<std::atomic<int>> by_worker(2);
  // Items long enough that the helper wakes up before the caller has taken them all.
  for (int job = 0; job < 20; ++job)
    team.run(64, [&](int64_t, int worker) {
      by_worker[worker].fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    });
  EXPECT_EQ(by_worker[0].load() + by_worker[1].load(), 20 * 64);
  EXPECT_GT(by_worker[1].load(), 0);
}

TEST(Team, OneThreadRunsInline) {
  Team team(1);
  const std::thread::id me = std::this_thread::get_id();
  int count = 0;
  team.run(10, [&](int64_t, int worker) {
    EXPECT_EQ(worker, 0);
    EXPECT_EQ(std::this_thread::get_id(), me);
    ++count;
  });
  EXPECT_EQ(count, 10);
}
