// index_tune.h: recall and latency of a memory's approximate index across its
// search parameter (nprobe for IVF, efSearch for HNSW), measured with the
// memory's own items as queries, so a user picks a setting from numbers.
//
// Basic usage:
//   vismem::Memory mem = vismem::Memory::open("mem.db");
//   vismem::TuneResult t = vismem::tune_index(mem, {.queries = 200, .k = 100});
//   std::cout << t.table();                           // one row per value, exact search first
//   if (auto v = t.smallest_with_recall(0.95)) mem.set_index_defaults(*v, 0, 0);
//
// Ground truth is the exact search (leave-one-out: each query item is not its
// own neighbor, SPEC section 2); recall@k = |approximate ∩ exact| / (queries * k).
// Timings: one batch of all queries (queries/s) and single queries one at a
// time (median ms), with the memory's files in the page cache after a warm-up.
// Thread safety: reads the memory only; may run beside searches.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "memory.h"

namespace vismem {

struct TuneOptions {
  int queries = 200;          // items sampled as queries (fixed seed)
  int k = 100;                // recall@k
  int threads = 0;            // 0: default_threads()
  int singles = 50;           // of the queries, how many are also timed one at a time
  std::vector<int> values;    // the sweep (empty: powers of two up to nlist, or 16..1024 for efSearch)
};

struct TuneRow {
  std::string param;          // "exact", "nprobe", "ef"
  int value = 0;
  double recall = 1.0;        // recall@k against exact search
  double batch_qps = 0;       // queries per second, one batch of all queries
  double single_ms = 0;       // median milliseconds, one query per call
};

struct TuneResult {
  int k = 0, queries = 0;
  std::string factory;
  std::vector<TuneRow> rows;  // rows[0] is exact search
  std::string table() const;  // markdown
  // The smallest swept value whose recall reaches `recall` (nullopt: none does).
  std::optional<int> smallest_with_recall(double recall) const;
};

// Throws vismem::Error when the memory has no built index or fewer than 2 items.
TuneResult tune_index(const Memory& mem, const TuneOptions& o);

}  // namespace vismem
