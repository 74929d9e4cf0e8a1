#include "decision.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "error.h"

namespace vismem {

NeighborVotes neighbor_votes(const Memory& mem, const std::vector<Neighbor>& nn, bool apply_pruning) {
  NeighborVotes nv;
  // Per query: the mode is a member read, not info() (which reads the file).
  const bool prune = apply_pruning && mem.pruning_mode() != "none";
  for (const Neighbor& n : nn) {
    nv.labels.push_back(n.label);
    nv.distances.push_back(n.distance);
    if (prune) {
      auto item = mem.item(n.id);
      if (!item) throw Error("neighbor " + n.id + " is not in the memory");
      nv.excluded.push_back(mem.excluded(*item));
      nv.reliability.push_back(mem.weight(*item));
    }
  }
  return nv;
}

void label_concentration(const std::vector<int32_t>& labels, int k, double& vote_share, double& entropy) {
  if (k < 1 || static_cast<size_t>(k) > labels.size()) throw Error("label_concentration: k outside the list");
  std::unordered_map<int32_t, int> count;
  int top = 0;
  for (int i = 0; i < k; ++i) top = std::max(top, ++count[labels[i]]);
  vote_share = static_cast<double>(top) / k;
  double h = 0;
  for (auto& [l, c] : count) {
    double p = static_cast<double>(c) / k;
    h -= p * std::log(p);
  }
  // Largest possible entropy of k labels is log(k) (all different).
  entropy = k > 1 ? h / std::log(static_cast<double>(k)) : 0.0;
}

Decision decide(Vote v, const NeighborVotes& nv, int k, const VoteParams& p) {
  VoteInput in;
  std::vector<std::string> names;
  std::unordered_map<std::string, int32_t> idx;
  for (const std::string& l : nv.labels) {
    auto [it, added] = idx.emplace(l, static_cast<int32_t>(names.size()));
    if (added) names.push_back(l);
    in.labels.push_back(it->second);
  }
  in.distances = nv.distances;
  in.excluded = nv.excluded;
  in.reliability = nv.reliability;
  VoteBreakdown b = vote_breakdown(v, in, k, p);
  Decision d;
  d.k = k;
  d.prediction = names.at(b.prediction);
  d.neighbor_weights = std::move(b.neighbor_weights);
  auto scores = b.scores;
  // Descending score; among equal scores the winner first (it may have reached
  // the tie later than another label, see SPEC's tie examples), then the order
  // labels first got a vote.
  const int32_t win = b.prediction;
  std::stable_sort(scores.begin(), scores.end(), [win](auto& x, auto& y) {
    if (x.second != y.second) return x.second > y.second;
    return x.first == win && y.first != win;
  });
  double total = 0;
  for (auto& [l, s] : scores) {
    total += s;
    d.scores.emplace_back(names[l], s);
  }
  d.score_share = total > 0 ? d.scores.at(0).second / total : 0.0;
  label_concentration(in.labels, k, d.vote_share, d.entropy);
  return d;
}

QueryDecision decide_query(const Memory& mem, const std::vector<Neighbor>& all, Vote v, int k, int ood_k,
                           const VoteParams& p) {
  if (all.empty()) throw Error("no neighbors: the memory is empty");
  QueryDecision q;
  k = static_cast<int>(std::min<size_t>(k, all.size()));
  q.ood_k = static_cast<int>(std::min<size_t>(ood_k, all.size()));
  q.neighbors.assign(all.begin(), all.begin() + k);
  q.votes = neighbor_votes(mem, q.neighbors, true);
  q.decision = decide(v, q.votes, k, p);
  std::vector<double> d;
  for (int i = 0; i < q.ood_k; ++i) d.push_back(all[i].distance);
  q.ood = ood_score(d, q.ood_k);
  return q;
}

nlohmann::json decision_json(const std::string& query_id, const std::string& vote, const QueryDecision& q) {
  const Decision& d = q.decision;
  nlohmann::json j = {{"query", query_id},         {"prediction", d.prediction}, {"vote", vote},
                      {"k", d.k},                  {"vote_share", d.vote_share}, {"score_share", d.score_share},
                      {"entropy", d.entropy},      {"ood_score", q.ood},         {"ood_k", q.ood_k}};
  nlohmann::json js = nlohmann::json::array();
  for (auto& [l, s] : d.scores) js.push_back({{"label", l}, {"score", s}});
  j["scores"] = js;
  nlohmann::json jn = nlohmann::json::array();
  for (size_t r = 0; r < q.neighbors.size(); ++r)
    jn.push_back({{"rank", r + 1}, {"id", q.neighbors[r].id}, {"label", q.neighbors[r].label},
                  {"distance", q.neighbors[r].distance}, {"weight", d.neighbor_weights[r]}});
  j["neighbors"] = jn;
  return j;
}

double ood_score(const std::vector<double>& distances, int k) {
  if (k < 1 || static_cast<size_t>(k) > distances.size()) throw Error("ood_score: k outside the list");
  std::vector<double> d(distances.begin(), distances.begin() + k);
  std::sort(d.begin(), d.end());  // already ascending from a search; sorted again for hand-made lists
  return k % 2 ? d[k / 2] : 0.5 * (d[k / 2 - 1] + d[k / 2]);
}

}  // namespace vismem
