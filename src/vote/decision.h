// decision.h: one query's decision, explained: the vote over its neighbors,
// the class totals, each neighbor's weight, and the confidence signals
// (vote share, normalized entropy, OOD score; SPEC section 5).
//
// Basic usage:
//   auto nn = mem.search(q, 1, 100)[0];
//   vismem::NeighborVotes nv = vismem::neighbor_votes(mem, nn, /*apply_pruning=*/true);
//   vismem::Decision d = vismem::decide(vismem::Vote::rank, nv, 20);
//   d.prediction; d.scores[0].second; d.neighbor_weights[3];
//   double ood = vismem::ood_score(nv.distances, 100);      // median distance to the first 100
//
// Pure functions over values (neighbor_votes only reads the memory).
// Thread safety: as for Memory's const accessors.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "aggregate.h"
#include "memory.h"

namespace vismem {

// One query's K neighbors as the vote sees them (ascending distance). The
// labels are strings so the same lists can be relabeled (taxonomy levels).
struct NeighborVotes {
  std::vector<std::string> labels;   // K
  std::vector<double> distances;     // K
  std::vector<uint8_t> excluded;     // K or empty (no hard pruning)
  std::vector<double> reliability;   // K or empty (no soft pruning)
};

// apply_pruning: the memory's pruning mode (vismem prune) sets excluded /
// reliability; false leaves them empty.
NeighborVotes neighbor_votes(const Memory& mem, const std::vector<Neighbor>& nn, bool apply_pruning);

struct Decision {
  std::string prediction;
  std::vector<std::pair<std::string, double>> scores;  // every voted label, descending score (ties: first reached)
  std::vector<double> neighbor_weights;                 // k entries; 0 for an excluded neighbor
  double score_share = 0;   // winner's score / sum of scores (the rule's own share)
  double vote_share = 0;    // SPEC calibration: count of the most frequent label among the k / k
  double entropy = 0;       // entropy of the k neighbor labels / log(k), in [0, 1]
  int k = 0;
};

// The rule's decision after the first k neighbors (k <= K; SPEC section 3,
// hard-pruning fallback included).
Decision decide(Vote v, const NeighborVotes& nv, int k, const VoteParams& p = {});

// Median of the first k distances (k <= K): the OOD score, larger = further
// from everything in the memory.
double ood_score(const std::vector<double>& distances, int k);

// A query's full answer from one search: the vote over the first k
// neighbors (memory pruning applied), the OOD score over the first ood_k.
// all: ascending distance, at least max(k, ood_k) long (or the whole memory).
struct QueryDecision {
  std::vector<Neighbor> neighbors;  // the first k
  NeighborVotes votes;              // as the vote saw them (k entries)
  Decision decision;
  double ood = 0;
  int ood_k = 0;
};
QueryDecision decide_query(const Memory& mem, const std::vector<Neighbor>& all, Vote v, int k, int ood_k,
                           const VoteParams& p = {});

// The answer as JSON (classify --json, the HTTP service): query, prediction,
// vote, k, vote_share, score_share, entropy, ood_score, ood_k,
// scores [{label, score}], neighbors [{rank, id, label, distance, weight}].
nlohmann::json decision_json(const std::string& query_id, const std::string& vote, const QueryDecision& q);

// Vote share and normalized entropy of the first k labels (counted as they
// are, pruning ignored: they describe the neighborhood, not the vote).
void label_concentration(const std::vector<int32_t>& labels, int k, double& vote_share, double& entropy);

}  // namespace vismem
