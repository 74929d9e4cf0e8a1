// team.h: a fork-join team of threads for one call, for fine-grained loops (one per layer).
//
// Basic usage:
//   vismem::Team team(threads);                 // threads - 1 helpers start; the caller is worker 0
//   team.run(rows, [&](int64_t i, int worker) { // each i in [0, rows) exactly once
//     process_row(i, scratch[worker]);
//   });                                          // returns when every i is done
//
//   vismem::TeamLease lease(threads);           // a forward pass: the process's kept team where free
//   lease.team().run(...);                       // (no threads started), else one of its own
//
// Why not an OpenMP parallel region per layer: OpenMP's barriers spin, and on
// a machine whose cores are busy with other processes a spinning thread keeps
// the one that has the remaining work off the CPU: 2 threads on 1 free core
// ran MobileNet 5x slower than 1 thread. Here work is taken dynamically from
// a shared counter (a descheduled thread delays at most the item it holds),
// and idle threads yield briefly and then sleep on a condition variable.
// Thread safety: one run() at a time, from the thread that owns the Team; f
// runs concurrently on the team's threads. TeamLease may be taken from any
// thread at any time (one holds the kept team, the others get their own).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace vismem {

class Team {
 public:
  explicit Team(int threads);
  ~Team();
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return static_cast<int>(helpers_.size()) + 1; }
  // Calls f(i, worker) for every i in [0, n); worker is in [0, size()). f must
  // not throw on a helper (worker > 0: std::terminate); on the calling thread
  // (worker 0) its exception stops the job (items not yet taken are skipped)
  // and is rethrown once the helpers are done, the team ready for the next run.
  void run(int64_t n, const std::function<void(int64_t, int)>& f);

 private:
  void helper(int worker);
  void work(int worker);

  std::vector<std::thread> helpers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // helpers that have not finished the current job
  bool stop_ = false;
};

// A team for one forward pass. The process keeps one team between passes
// (a new one per pass started its helper threads, whose thread_local GEMM
// buffers were then page-faulted again, while the caller waited: see
// vit.cpp): a lease takes it when no other pass holds it, and then kept() is
// true and the caller may also use what is kept beside it (kept_state: an
// encoder's arena), under the same lease. Otherwise (another thread's pass
// holds it, or this thread's own, in a pass nested in one) the lease starts a
// team of its own for this pass, as before. The kept team is replaced when a
// pass wants another size (a 1-thread pass leaves it), and is never larger
// than kMaxKeptThreads. In a fork()ed child (pthread_atfork) the parent's
// kept team and states are left alone, since its threads do not exist there
// and its lock may be held by a thread that does not either: the child's first
// pass starts a fresh set. Nothing kept is ever destroyed (a pass may still
// run on another thread at exit); the helpers end with the process.
// Throws std::system_error if threads cannot be started (the team then has
// stopped and joined the ones it had).
class TeamLease {
 public:
  static constexpr int kMaxKeptThreads = 64;
  explicit TeamLease(int threads);
  ~TeamLease();
  TeamLease(const TeamLease&) = delete;
  TeamLease& operator=(const TeamLease&) = delete;
  Team& team() { return *team_; }
  bool kept() const { return kept_ != nullptr; }

  // The process's one T kept beside the kept team (value-initialized on first
  // use, never destroyed), for this lease's holder alone until ~TeamLease.
  // Only where kept(); throws vismem::Error otherwise.
  template <class T>
  T& kept_state() {
    return *static_cast<T*>(kept_slot(&kept_tag<T>, [] { return static_cast<void*>(new T()); }));
  }

  struct Kept;  // team.cpp

 private:
  // One address per T in the program: writable, so that no constant merging
  // (-fmerge-all-constants) can give two types one slot.
  template <class T>
  static inline char kept_tag = 0;
  void* kept_slot(const void* tag, void* (*make)());

  std::unique_ptr<Team> own_;
  Team* team_ = nullptr;
  Kept* kept_ = nullptr;  // the kept set this lease holds the lock of
};

}  // namespace vismem
