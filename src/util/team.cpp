#include "team.h"

#include <cxxabi.h>

#include <chrono>
#include <exception>
#include <memory>
#include <utility>
#include <vector>

#include <pthread.h>

#include "error.h"

namespace vismem {

namespace {
// How long an idle thread keeps checking (yielding between checks) before it
// sleeps: long enough to cover the gap between two layers, short enough not
// to matter when another process needs the core. 300 us, not 50: ViT-S at
// batch 1 forks and joins 41 times per image, and with 50 a thread that
// finished its share early slept for about a third of them, each wake-up
// costing tens of microseconds on a VM; 2 threads ran 4 to 6% faster with
// 300 (one process alternating, three runs on an idle 2-core Zen 3 VM) and
// the same within noise with the other core kept busy by another process.
constexpr auto kSpin = std::chrono::microseconds(300);

template <class Ready>
bool spin_until(Ready ready) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  do {
    if (ready()) return true;
    std::this_thread::yield();
  } while (std::chrono::steady_clock::now() < end);
  return ready();
}
}  // namespace

Team::Team(int threads) {
  try {
    for (int w = 1; w < threads; ++w) helpers_.emplace_back([this, w] { helper(w); });
  } catch (...) {  // out of threads: stop the helpers that started before unwinding
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : helpers_) t.join();
    throw;
  }
}

Team::~Team() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

void Team::work(int worker) {
  for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) (*job_)(i, worker);
}

void Team::run(int64_t n, const std::function<void(int64_t, int)>& f) {
  if (helpers_.empty() || n <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &f;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(static_cast<int>(helpers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_.notify_all();
  // Every helper must check in before the next job replaces this one (or the
  // job's state goes out of scope), also when the job throws here.
  const auto wait_for_helpers = [&] {
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  };
  std::exception_ptr error;
  try {
    work(0);
  } catch (abi::__forced_unwind&) {  // this thread is being cancelled: unwind on, after the helpers
    next_.store(n_, std::memory_order_relaxed);
    wait_for_helpers();
    throw;
  } catch (...) {  // no more items, then wait for the helpers as always
    error = std::current_exception();
    next_.store(n_, std::memory_order_relaxed);
  }
  wait_for_helpers();
  if (error) std::rethrow_exception(error);
}

void Team::helper(int worker) {
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mu_);
      start_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    work(worker);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // pairs with the caller's wait
      done_.notify_one();
    }
  }
}

// The process's kept team and the states kept beside it. mu: held by the
// lease that uses them, for a whole pass.
struct TeamLease::Kept {
  std::mutex mu;
  std::unique_ptr<Team> team;
  std::vector<std::pair<const void*, void*>> states;  // kept_state's objects by their type's tag
  Kept* dropped = nullptr;  // the set a fork dropped before this one was made (kept reachable: no leak reports)
};

namespace {
// The current kept set, made on first use. Never destroyed: at exit another
// thread may be in a pass on it (destroying it there crashed), and a job on a
// helper may call exit(). In a forked child the parent's set is dropped, not
// destroyed: its team's threads are not there to join (waiting on them hung)
// and its lock may be held for good by a thread that is not there either.
std::atomic<TeamLease::Kept*> g_kept{nullptr};
std::atomic<TeamLease::Kept*> g_dropped{nullptr};

void drop_kept_in_child() {  // one thread in the child: nothing to race with
  if (TeamLease::Kept* old = g_kept.exchange(nullptr, std::memory_order_relaxed)) g_dropped.store(old);
}

// Registered when the library is loaded, not on first use: a fork while
// another thread was inside a function-local static's initializer left the
// child waiting on that initializer's guard for good. A constructor of the
// first user priority, not a namespace-scope initializer: another translation
// unit's static initializer may run first, take a lease and fork, and its
// child would inherit a kept team whose threads are not there. (Only another
// constructor of priority 101 may still run before it: 0-100 are reserved.)
[[gnu::constructor(101)]] void register_drop_in_child() {
  pthread_atfork(nullptr, nullptr, drop_kept_in_child);
}

TeamLease::Kept& kept_set() {
  TeamLease::Kept* k = g_kept.load(std::memory_order_acquire);
  if (k != nullptr) return *k;
  auto fresh = std::make_unique<TeamLease::Kept>();
  fresh->dropped = g_dropped.load();
  if (g_kept.compare_exchange_strong(k, fresh.get(), std::memory_order_acq_rel)) return *fresh.release();
  return *k;  // another thread made it first
}

thread_local bool t_leasing = false;  // this thread holds the kept team (a nested pass must not take it)
}  // namespace

TeamLease::TeamLease(int threads) {
  if (threads < 1) threads = 1;
  Kept& k = kept_set();
  if (!t_leasing && threads <= kMaxKeptThreads && k.mu.try_lock()) {
    std::unique_lock<std::mutex> lock(k.mu, std::adopt_lock);
    if (threads == 1) {  // no helpers to keep: the kept team stays for the next pass on several
      own_ = std::make_unique<Team>(1);
      team_ = own_.get();
    } else if (!k.team || k.team->size() != threads) {
      k.team.reset();
      k.team = std::make_unique<Team>(threads);  // on a throw the lock is released, nothing is kept
    }
    if (!team_) team_ = k.team.get();
    kept_ = &k;
    t_leasing = true;
    lock.release();  // held until ~TeamLease
    return;
  }
  own_ = std::make_unique<Team>(threads);
  team_ = own_.get();
}

TeamLease::~TeamLease() {
  if (kept_) {
    t_leasing = false;
    kept_->mu.unlock();  // the set this lease locked (in a child forked during the pass: the parent's)
  }
}

void* TeamLease::kept_slot(const void* tag, void* (*make)()) {
  if (!kept_) throw Error("TeamLease::kept_state: this lease does not hold the kept team");
  for (const auto& [t, state] : kept_->states)
    if (t == tag) return state;
  kept_->states.reserve(kept_->states.size() + 1);  // so that the emplace below cannot throw and lose the state
  void* state = make();
  kept_->states.emplace_back(tag, state);
  return state;
}

}  // namespace vismem
