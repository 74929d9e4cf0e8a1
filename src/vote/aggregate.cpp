#include "aggregate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.h"

namespace vismem {

std::string vote_name(Vote v) {
  switch (v) {
    case Vote::plurality: return "plurality";
    case Vote::distance: return "distance";
    case Vote::softmax: return "softmax";
    case Vote::rank: return "rank";
  }
  return "?";
}

Vote parse_vote(const std::string& s) {
  for (Vote v : all_votes)
    if (vote_name(v) == s) return v;
  throw Error("unknown voting rule '" + s + "' (plurality, distance, softmax, rank)");
}

double vote_weight(Vote v, double d, int r, const VoteParams& p) {
  switch (v) {
    case Vote::plurality: return 1.0;
    case Vote::distance: return std::pow(std::exp(-d), p.distance_power);
    case Vote::softmax: return std::exp((1.0 - d) / p.temperature);
    case Vote::rank: return 1.0 / (r + p.rank_offset);
  }
  return 0.0;
}

namespace {

void check_input(const VoteInput& in) {
  size_t k = in.labels.size();
  if (in.distances.size() != k) throw Error("vote: labels and distances differ in length");
  for (int32_t l : in.labels)
    if (l < 0) throw Error("vote: negative label index");
  if (!in.excluded.empty() && in.excluded.size() != k) throw Error("vote: exclusion flags differ in length");
  if (!in.reliability.empty() && in.reliability.size() != k) throw Error("vote: reliability weights differ in length");
}

// The single voting walk; calls on_step(k, prediction) after each neighbor
// and on_weight(i, w) for each neighbor's contribution.
template <typename Step, typename Weight>
void walk(Vote v, const VoteInput& in, size_t kmax, const VoteParams& p, std::vector<double>& score,
          std::vector<int32_t>& touched, Step on_step, Weight on_weight) {
  std::vector<uint8_t> seen;
  bool use_exclusion = false;
  if (!in.excluded.empty()) {
    // Hard-pruning fallback: a query whose K neighbors are all excluded votes without exclusion.
    use_exclusion = std::any_of(in.excluded.begin(), in.excluded.end(), [](uint8_t e) { return e == 0; });
  }
  int32_t best = -1;
  double best_score = -std::numeric_limits<double>::infinity();
  int counted = 0;
  for (size_t i = 0; i < kmax; ++i) {
    int32_t label = in.labels[i];
    double w = 0.0;
    if (!(use_exclusion && in.excluded[i])) {
      w = vote_weight(v, in.distances[i], counted, p);
      if (!in.reliability.empty()) w *= in.reliability[i];
      if (static_cast<size_t>(label) >= score.size()) {
        score.resize(label + 1, 0.0);
        seen.resize(label + 1, 0);
      }
      if (!seen[label]) {
        seen[label] = 1;
        touched.push_back(label);
      }
      score[label] += w;
      ++counted;
      if (best < 0 || score[label] > best_score) {
        best = label;
        best_score = score[label];
      }
    }
    on_weight(i, w);
    on_step(i + 1, best >= 0 ? best : in.labels[0]);
  }
}

}  // namespace

std::vector<int32_t> predict_all_k(Vote v, const VoteInput& in, const VoteParams& p) {
  check_input(in);
  std::vector<int32_t> out(in.labels.size());
  std::vector<double> score;
  std::vector<int32_t> touched;
  walk(v, in, in.labels.size(), p, score, touched, [&](size_t k, int32_t pred) { out[k - 1] = pred; },
       [](size_t, double) {});
  return out;
}

VoteBreakdown vote_breakdown(Vote v, const VoteInput& in, int k, const VoteParams& p) {
  check_input(in);
  if (k < 1 || static_cast<size_t>(k) > in.labels.size())
    throw Error("vote: k=" + std::to_string(k) + " outside 1.." + std::to_string(in.labels.size()));
  VoteBreakdown b;
  b.neighbor_weights.assign(k, 0.0);
  std::vector<double> score;
  std::vector<int32_t> touched;
  walk(v, in, static_cast<size_t>(k), p, score, touched, [&](size_t, int32_t pred) { b.prediction = pred; },
       [&](size_t i, double w) { b.neighbor_weights[i] = w; });
  for (int32_t label : touched) b.scores.emplace_back(label, score[label]);
  return b;
}

void minmax_normalize(std::vector<VoteInput>& queries) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& q : queries)
    for (double d : q.distances) {
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
  double span = hi - lo;
  for (auto& q : queries)
    for (double& d : q.distances) d = span > 0 ? (d - lo) / span : 0.0;
}

}  // namespace vismem
