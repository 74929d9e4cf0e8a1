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

#include "memory.h"

namespace vismem {

Memory::Counts compute_prune_counts(const Memory& mem, int k, int threads = 0,
                                    const std::function<void(int64_t, int64_t)>& progress = {});

// Soft-pruning weight for an item wrong `wrong` times: 1.75 / (1 + wrong), or 1 if never wrong.
double reliability_weight(int64_t wrong);

}  // namespace vismem
