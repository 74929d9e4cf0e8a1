// team.h: a fork-join team of threads for one call, for fine-grained loops (one per layer).
//
// Basic usage:
//   vismem::Team team(threads);                 // threads - 1 helpers start; the caller is worker 0
//   team.run(rows, [&](int64_t i, int worker) { // each i in [0, rows) exactly once
//     process_row(i, scratch[worker]);
//   });                                          // returns when every i is done
//
// Why not an OpenMP parallel region per layer: OpenMP's barriers spin, and on
// a machine whose cores are busy with other processes a spinning thread keeps
// the one that has the remaining work off the CPU: 2 threads on 1 free core
// ran MobileNet 5x slower than 1 thread. Here work is taken dynamically from
// a shared counter (a descheduled thread delays at most the item it holds),
// and idle threads yield briefly and then sleep on a condition variable.
// Thread safety: one run() at a time, from the thread that owns the Team; f
// runs concurrently on the team's threads.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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
  // Calls f(i, worker) for every i in [0, n); worker is in [0, size()). f must not throw.
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

// The calling thread's team of `threads` (threads - 1 helpers), kept for its
// next call: starting helper threads for every forward pass cost the threads'
// start and their thread_local buffers' page faults each time (MobileNet at
// batch 1 on 2 threads: see mobilenet.cpp). A call with another count replaces
// it. In a fork()ed child, whose copy has no threads, the old team is left
// alone (joining threads that do not exist there would hang) and a new one
// started. The helpers sleep between calls and end with the calling thread.
Team& thread_team(int threads);

}  // namespace vismem
