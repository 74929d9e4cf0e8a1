// eval.h: accuracy@k and best k for the four voting rules (SPEC sections 3 and 7).
//
// Basic usage:
//   std::vector<vismem::QueryNeighbors> qs = vismem::read_neighbor_file("neighbors.json");
//   vismem::EvalOptions opt;                         // exclusions, reliability, normalization, K
//   vismem::EvalResult r = vismem::evaluate(qs, opt);
//   std::cout << vismem::eval_json(r).dump() << "\n" << vismem::eval_table(r);
//
// Thread safety: pure functions over values.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "aggregate.h"
#include "memory.h"
#include "neighbors.h"

namespace vismem {

struct EvalOptions {
  std::unordered_set<std::string> exclude_ids;              // hard pruning: memory ids
  std::unordered_map<std::string, double> reliability;      // soft pruning: id -> rho (absent: 1)
  bool normalize_distances = false;                         // min-max over the whole set first
  int k = 0;                                                // 0: the lists' length
  VoteParams params;
  std::vector<Vote> votes = {all_votes.begin(), all_votes.end()};
};

struct MethodResult {
  std::vector<double> accuracy_at_k;  // percent, k = 1..K
  double best = 0;                    // max over k
  int best_k = 0;                     // smallest k reaching best
};

struct EvalResult {
  int64_t queries = 0;
  int k = 0;
  std::map<Vote, MethodResult> methods;
};

// Per-query inputs for the vote functions with labels interned; labels of the
// queries' true classes are interned in the same table.
struct InternedQueries {
  std::vector<std::string> label_names;
  std::vector<VoteInput> inputs;                 // one per query
  std::vector<std::vector<int32_t>> truths;      // true label indices per query
};
InternedQueries intern_queries(const std::vector<QueryNeighbors>& qs, const EvalOptions& opt);

// Throws vismem::Error if there is no query or no neighbor, or a query has no
// true label or fewer than K neighbors.
EvalResult evaluate(const std::vector<QueryNeighbors>& qs, const EvalOptions& opt);

nlohmann::ordered_json eval_json(const EvalResult& r);

// Queries that can never be right: none of their true labels is in `known`
// (the memory's labels). A non-empty answer usually means the query labels
// are named differently from the memory's (n01440764 vs 0). Returns a
// warning for stderr ("" when every query's label is known); `where` names
// the label source ("the memory", "the neighbor lists").
std::string unknown_label_warning(const std::vector<QueryNeighbors>& qs, const std::unordered_set<std::string>& known,
                                  const std::string& where);
// Human-readable: k = 1, 5, 10, 20, ..., K rows plus best and best k.
std::string eval_table(const EvalResult& r);

// Memory search results as neighbor lists (SPEC section 7). query_ids: nq
// (empty: "q0", "q1", ...); true_labels: nq or empty (unknown).
std::vector<QueryNeighbors> to_query_neighbors(const std::vector<std::vector<Neighbor>>& results,
                                               const std::vector<std::string>& query_ids,
                                               const std::vector<std::string>& true_labels,
                                               const std::string& featurizer);

// The memory's pruning state as evaluation options (hard: exclusions, soft: weights).
void apply_memory_pruning(const Memory& mem, EvalOptions& opt);

// Reads an id list (one per line) and an id<TAB>weight file.
std::unordered_set<std::string> read_id_set(const std::string& path);
std::unordered_map<std::string, double> read_reliability_tsv(const std::string& path);

}  // namespace vismem
