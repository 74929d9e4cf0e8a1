// aggregate.h: the four voting rules over a sorted neighbor list (SPEC section 3).
//
// Basic usage:
//   vismem::VoteInput in;                 // one query's neighbors, ascending distance
//   in.labels = {2, 3, 3, 1, 1};          // interned label indices
//   in.distances = {0.1, 0.2, 0.2, 0.3, 0.4};
//   std::vector<int32_t> pred = vismem::predict_all_k(vismem::Vote::rank, in);   // pred[k-1]: prediction at k
//
// Pure functions: no I/O, no global state; every k = 1..K in one pass, scores in
// double, ties kept by the label that reached the score first (strict >).
// Thread safety: pure; call from any thread.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vismem {

enum class Vote { plurality, distance, softmax, rank };
inline constexpr std::array<Vote, 4> all_votes = {Vote::plurality, Vote::distance, Vote::softmax, Vote::rank};
std::string vote_name(Vote v);        // "plurality", "distance", "softmax", "rank"
Vote parse_vote(const std::string&);  // throws vismem::Error on an unknown name

struct VoteParams {
  double distance_power = 1.0;   // DistanceVoting: exp(-d)^p
  double temperature = 0.07;     // SoftmaxVoting: exp((1 - d) / T)
  double rank_offset = 2.0;      // RankVoting: 1 / (r + offset)
};

// One query's neighbors, ascending distance. All arrays have K entries;
// excluded and reliability may be empty (nothing excluded, every weight 1).
struct VoteInput {
  std::vector<int32_t> labels;      // K label indices (>= 0)
  std::vector<double> distances;    // K cosine distances
  std::vector<uint8_t> excluded;    // K flags (hard pruning) or empty
  std::vector<double> reliability;  // K weights rho (soft pruning) or empty
};

// Weight of a counted neighbor at distance d with r neighbors counted before it
// (before reliability).
double vote_weight(Vote v, double d, int r, const VoteParams& p);

// Predictions at every k = 1..K: out[k-1]. Applies the hard-pruning fallback
// (every neighbor excluded -> no exclusion for this query).
std::vector<int32_t> predict_all_k(Vote v, const VoteInput& in, const VoteParams& p = {});

// Final class scores after the first k neighbors (k <= K), for explanations:
// (label, score) in the order labels first reached a nonzero score, and the
// weight each neighbor contributed (0 when excluded).
struct VoteBreakdown {
  int32_t prediction = -1;
  std::vector<std::pair<int32_t, double>> scores;
  std::vector<double> neighbor_weights;  // k entries
};
VoteBreakdown vote_breakdown(Vote v, const VoteInput& in, int k, const VoteParams& p = {});

// Min-max normalization of all distances of an evaluation set to [0, 1]
// (SPEC section 3, last bullet). A constant set maps to 0.
void minmax_normalize(std::vector<VoteInput>& queries);

}  // namespace vismem
