// Team (fork-join helper threads): every item runs exactly once, on a valid
// worker, for many consecutive jobs, including more threads than cores.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
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

TEST(TeamLease, OnePassAtATimeHoldsTheKeptTeam) {
  Team* first = nullptr;
  {
    vismem::TeamLease a(2);
    ASSERT_TRUE(a.kept());
    first = &a.team();
    {
      vismem::TeamLease nested(2);  // a pass inside a pass on this thread: a team of its own
      EXPECT_FALSE(nested.kept());
      EXPECT_NE(&nested.team(), first);
    }
    bool other_kept = true;  // another thread while this one holds it: its own team
    std::thread([&] { other_kept = vismem::TeamLease(2).kept(); }).join();
    EXPECT_FALSE(other_kept);
    std::atomic<int> ran{0};
    a.team().run(16, [&](int64_t, int) { ++ran; });
    EXPECT_EQ(ran.load(), 16);
  }
  {
    vismem::TeamLease b(2);  // free again: the same team
    EXPECT_TRUE(b.kept());
    EXPECT_EQ(&b.team(), first);
  }
  {
    vismem::TeamLease one(1);  // one thread: nothing to keep, the kept team stays
    EXPECT_TRUE(one.kept());
    EXPECT_EQ(one.team().size(), 1);
  }
  EXPECT_EQ(&vismem::TeamLease(2).team(), first);
  EXPECT_EQ(vismem::TeamLease(3).team().size(), 3);  // another size replaces it
  EXPECT_FALSE(vismem::TeamLease(vismem::TeamLease::kMaxKeptThreads + 1).kept());
}

TEST(TeamLease, AForkedChildRunsAndExits) {
  // The child's copy of the kept team has no threads: it must neither use it
  // nor wait on it at exit (exit(), not _exit: the static destructors run).
  { vismem::TeamLease warm(2); }
  for (const bool use : {true, false}) {
    fflush(nullptr);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      alarm(30);  // a hang fails the test instead of stalling it
      int ran = 0;
      if (use) {
        vismem::TeamLease lease(2);
        std::atomic<int> n{0};
        lease.team().run(8, [&](int64_t, int) { ++n; });
        ran = n.load();
      }
      std::exit(use && ran != 8 ? 3 : 0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                   << "): it hung";
    EXPECT_EQ(WEXITSTATUS(status), 0) << (use ? "the child's pass did not run every item" : "");
  }
}

// A static initializer of this file runs before team.cpp's default-priority
// ones (this object comes first on the link line; under -flto GCC reverses
// that order, and the test would no longer tell): it takes a lease, so a kept
// team exists, and forks. The child must drop that team (its threads are not
// there), so the fork handler has to be registered before any initializer
// can run. It runs in every test_team process, gtest's listing included.
namespace {
int fork_in_static_init() {
  { vismem::TeamLease warm(2); warm.team().run(4, [](int64_t, int) {}); }
  fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    alarm(10);  // a hang kills the child instead of stalling every test_team process
    vismem::TeamLease lease(2);
    std::atomic<int> n{0};
    lease.team().run(8, [&](int64_t, int) { ++n; });
    _exit(n.load() == 8 && lease.kept() ? 0 : 3);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child) return -1;
  return status;
}
const int g_static_init_fork_status = fork_in_static_init();
}  // namespace

TEST(TeamLease, AChildForkedFromAnEarlierStaticInitializerRuns) {
  const int status = g_static_init_fork_status;
  ASSERT_NE(status, -1) << "fork or waitpid failed";
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << "): it hung on the parent's kept team";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's pass did not run every item on a kept team";
}

TEST(TeamLease, KeptStateIsOnePerTypeUnderTheLease) {
  struct Counter {
    int n;
  };
  struct Other {
    int n;
  };
  int* first = nullptr;
  {
    vismem::TeamLease a(2);
    ASSERT_TRUE(a.kept());
    Counter& c = a.kept_state<Counter>();
    first = &c.n;
    c.n = 41;
    EXPECT_EQ(a.kept_state<Other>().n, 0);  // another type: its own, value-initialized
    vismem::TeamLease nested(2);            // not kept: no state to hand out
    EXPECT_THROW(nested.kept_state<Counter>(), vismem::Error);
  }
  vismem::TeamLease b(3);  // the next holder (another team size) finds the same object
  ASSERT_TRUE(b.kept());
  EXPECT_EQ(&b.kept_state<Counter>().n, first);
  EXPECT_EQ(b.kept_state<Counter>().n, 41);
}

TEST(TeamLease, AChildForkedDuringAnotherThreadsPassGetsAKeptTeamOfItsOwn) {
  // At fork another thread holds the lease: that thread is not in the child,
  // so the child's copy of the lock would stay held for good. The child
  // starts a fresh kept set (pthread_atfork) and its passes use it.
  struct Mark {
    int n;
  };
  std::atomic<bool> holding{false}, release{false};
  std::thread holder([&] {
    vismem::TeamLease lease(2);
    lease.kept_state<Mark>().n = 7;
    holding = lease.kept();
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_FALSE(vismem::TeamLease(2).kept());  // held here: the parent's passes get their own
  fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(30);
    int code = 0;
    for (int pass = 0; pass < 3 && code == 0; ++pass) {
      vismem::TeamLease lease(2);
      std::atomic<int> n{0};
      if (lease.kept()) lease.team().run(8, [&](int64_t, int) { ++n; });
      if (!lease.kept()) code = 4;                               // no kept team in the child
      else if (n != 8) code = 3;                                 // its team did not run every item
      else if (lease.kept_state<Mark>().n != (pass == 0 ? 0 : 9)) code = 5;  // the parent's state, not a fresh one
      if (code == 0) lease.kept_state<Mark>().n = 9;
    }
    std::exit(code);
  }
  release = true;
  holder.join();
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << "): it hung";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "4: no kept team, 3: not every item ran, 5: the parent's kept state";
  vismem::TeamLease after(2);  // the parent's own set is untouched
  ASSERT_TRUE(after.kept());
  EXPECT_EQ(after.kept_state<Mark>().n, 7);
}

TEST(Team, AThrowOnTheCallingThreadStopsTheJobAndTheTeamGoesOn) {
  Team team(2);
  std::atomic<int> ran{0};
  std::atomic<bool> caller_in{false};
  EXPECT_THROW(team.run(1000, [&](int64_t, int worker) {
    if (worker == 0) {
      caller_in = true;
      throw std::runtime_error("job failed");
    }
    // The helper waits (up to 10 s) until the calling thread has taken an
    // item, so that the throw happens there however the threads are scheduled.
    for (int i = 0; i < 10000 && !caller_in; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++ran;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }), std::runtime_error);
  const int when_thrown = ran.load();  // the helpers were done before run() rethrew: nothing runs after
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(ran.load(), when_thrown);
  EXPECT_LT(when_thrown, 1000);
  std::atomic<int> after{0};
  team.run(64, [&](int64_t, int) { ++after; });
  EXPECT_EQ(after.load(), 64);
}
