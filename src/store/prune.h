// prune.h: memory pruning counts by leave-one-out self-query (SPEC section 4).
//
// Basic usage:
//   vismem::Memory mem = vismem::Memory::open("mem.db");
//   vismem::Memory::Counts c = vismem::compute_prune_counts(mem, /*k=*/100);
//   mem.set_counts(c, 100);                 // stores wrong/correct and rho = 1.75 / (1 + wrong)
//   mem.set_pruning("hard", 128);           // classify/eval now exclude items with wrong >= 128
//
// Every item q is queried against the memory without itself; each of its
// first k neighbors j gets wrong_j += 1 if j's label differs from q's, else
// correct_j += 1. A pass of its own: searching never changes counts.
// Thread safety: reads the memory only (search is const); safe alongside other searches.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "memory.h"

namespace vismem {

// Every item's counts (and kth) from scratch.
Memory::Counts compute_prune_counts(const Memory& mem, int k, int threads = 0,
                                    const std::function<void(int64_t, int64_t)>& progress = {});

// Exact upkeep of current counts across a change (SPEC section 4: counts must be
// recomputed or updated when the memory changes). Memory::add and
// Memory::remove use it when the counts were current before the change, so
// they stay current. Only the items whose leave-one-out lists the change can
// touch are searched again: an item q is affected by a new or removed item x
// only if d(q, x) <= kth(q), the distance of q's k-th neighbor when counted.
// The result equals compute_prune_counts on the changed memory, count for count.
class CountsUpkeep {
 public:
  // Before adding n items (x: n * dim, L2-normalized). nullopt: counts not current.
  static std::optional<CountsUpkeep> before_add(const Memory& mem, const std::vector<std::string>& ids, const float* x,
                                                int64_t n);
  static std::optional<CountsUpkeep> before_remove(const Memory& mem, const std::vector<std::string>& ids);
  // After the change: updates and stores the counts (current again).
  void after(Memory& mem);
  // Leave-one-out lists searched again; -1 when it recomputed everything.
  int64_t recomputed() const { return recomputed_; }

 private:
  using List = std::vector<std::pair<std::string, std::string>>;  // leave-one-out neighbors: (id, label)
  int k_ = 0;
  bool full_ = false;
  std::vector<std::string> candidates_;       // existing items whose lists may change
  std::vector<std::string> candidate_labels_;
  std::vector<List> old_lists_;               // their lists before the change
  std::vector<std::string> removed_labels_;
  std::vector<List> removed_lists_;           // removed items' own lists (their votes go away)
  std::vector<std::string> added_;
  int64_t recomputed_ = 0;
};

// Soft-pruning weight for an item wrong `wrong` times: 1.75 / (1 + wrong), or 1 if never wrong.
double reliability_weight(int64_t wrong);

}  // namespace vismem
