#include "eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "error.h"
#include "textio.h"

namespace vismem {

InternedQueries intern_queries(const std::vector<QueryNeighbors>& qs, const EvalOptions& opt) {
  InternedQueries out;
  std::unordered_map<std::string, int32_t> index;
  auto intern = [&](const std::string& s) {
    auto [it, added] = index.emplace(s, static_cast<int32_t>(out.label_names.size()));
    if (added) out.label_names.push_back(s);
    return it->second;
  };
  int k = opt.k;
  if (k == 0 && !qs.empty()) {
    k = static_cast<int>(qs[0].neighbor_ids.size());
    for (const auto& q : qs) k = std::min<int>(k, static_cast<int>(q.neighbor_ids.size()));
  }
  out.inputs.reserve(qs.size());
  out.truths.reserve(qs.size());
  for (const auto& q : qs) {
    if (static_cast<int>(q.neighbor_ids.size()) < k)
      throw Error("query '" + q.query_id + "' has " + std::to_string(q.neighbor_ids.size()) + " neighbors, fewer than k=" +
                  std::to_string(k));
    VoteInput in;
    in.labels.resize(k);
    in.distances.assign(q.distances.begin(), q.distances.begin() + k);
    for (int i = 0; i < k; ++i) in.labels[i] = intern(q.neighbor_labels[i]);
    if (!opt.exclude_ids.empty()) {
      in.excluded.resize(k);
      for (int i = 0; i < k; ++i) in.excluded[i] = opt.exclude_ids.count(q.neighbor_ids[i]) ? 1 : 0;
    }
    if (!opt.reliability.empty()) {
      in.reliability.resize(k);
      for (int i = 0; i < k; ++i) {
        auto it = opt.reliability.find(q.neighbor_ids[i]);
        in.reliability[i] = it == opt.reliability.end() ? 1.0 : it->second;
      }
    }
    std::vector<int32_t> truth;
    for (const auto& t : q.true_labels) truth.push_back(intern(t));
    out.inputs.push_back(std::move(in));
    out.truths.push_back(std::move(truth));
  }
  if (opt.normalize_distances) minmax_normalize(out.inputs);
  return out;
}

EvalResult evaluate(const std::vector<QueryNeighbors>& qs, const EvalOptions& opt) {
  if (qs.empty()) throw Error("evaluation needs at least one query");
  InternedQueries iq = intern_queries(qs, opt);
  EvalResult r;
  r.queries = static_cast<int64_t>(qs.size());
  r.k = static_cast<int>(iq.inputs[0].labels.size());
  if (r.k < 1) throw Error("evaluation needs at least one neighbor per query (k = 0)");
  for (size_t i = 0; i < qs.size(); ++i)
    if (iq.truths[i].empty()) throw Error("query '" + qs[i].query_id + "' has no true label (image_class)");
  for (Vote v : opt.votes) {
    std::vector<int64_t> correct(r.k, 0);
    for (size_t i = 0; i < iq.inputs.size(); ++i) {
      std::vector<int32_t> pred = predict_all_k(v, iq.inputs[i], opt.params);
      const auto& truth = iq.truths[i];
      for (int k = 0; k < r.k; ++k)
        if (std::find(truth.begin(), truth.end(), pred[k]) != truth.end()) ++correct[k];
    }
    MethodResult m;
    m.accuracy_at_k.resize(r.k);
    int64_t best_count = -1;
    for (int k = 0; k < r.k; ++k) {
      m.accuracy_at_k[k] = 100.0 * static_cast<double>(correct[k]) / static_cast<double>(r.queries);
      if (correct[k] > best_count) {  // compare counts, so "best" has no float ties
        best_count = correct[k];
        m.best_k = k + 1;
      }
    }
    m.best = m.accuracy_at_k[m.best_k - 1];
    r.methods[v] = std::move(m);
  }
  return r;
}

nlohmann::ordered_json eval_json(const EvalResult& r) {
  nlohmann::ordered_json methods = nlohmann::ordered_json::object();
  for (const auto& [v, m] : r.methods)
    methods[vote_name(v)] = {{"accuracy_at_k", m.accuracy_at_k}, {"best", m.best}, {"best_k", m.best_k}};
  nlohmann::ordered_json out;
  out["queries"] = r.queries;
  out["methods"] = std::move(methods);
  return out;
}

std::string unknown_label_warning(const std::vector<QueryNeighbors>& qs, const std::unordered_set<std::string>& known,
                                  const std::string& where) {
  int64_t unknown = 0;
  std::string example;
  for (const auto& q : qs) {
    if (q.true_labels.empty()) continue;
    bool any = false;
    for (const auto& t : q.true_labels) any = any || known.count(t);
    if (any) continue;
    if (example.empty()) example = q.true_labels[0];
    ++unknown;
  }
  if (unknown == 0) return "";
  std::string known_example = known.empty() ? "" : *std::min_element(known.begin(), known.end());
  if (unknown == static_cast<int64_t>(qs.size()))
    return "warning: no query label occurs in " + where + " (queries: '" + printable(example) + "', ..., " + where +
           ": '" + printable(known_example) + "', ...): every accuracy is 0; are the labels named the same way?";
  return "warning: " + std::to_string(unknown) + " of " + std::to_string(qs.size()) + " queries have a label " + where +
         " lacks (e.g. '" + printable(example) + "'); they count as wrong";
}

std::string eval_table(const EvalResult& r) {
  std::ostringstream os;
  char buf[64];
  os << "accuracy@k (%) over " << r.queries << " queries\n";
  os << "      k";
  for (const auto& [v, m] : r.methods) {
    std::snprintf(buf, sizeof buf, " %10s", vote_name(v).c_str());
    os << buf;
  }
  os << "\n";
  std::vector<int> rows = {1, 5};
  for (int k = 10; k <= r.k; k += 10) rows.push_back(k);
  if (std::find(rows.begin(), rows.end(), r.k) == rows.end()) rows.push_back(r.k);
  for (int k : rows) {
    if (k > r.k) continue;
    std::snprintf(buf, sizeof buf, "%7d", k);
    os << buf;
    for (const auto& [v, m] : r.methods) {
      std::snprintf(buf, sizeof buf, " %10.2f", m.accuracy_at_k[k - 1]);
      os << buf;
    }
    os << "\n";
  }
  os << "   best";
  for (const auto& [v, m] : r.methods) {
    std::snprintf(buf, sizeof buf, " %10.2f", m.best);
    os << buf;
  }
  os << "\n best k";
  for (const auto& [v, m] : r.methods) {
    std::snprintf(buf, sizeof buf, " %10d", m.best_k);
    os << buf;
  }
  os << "\n";
  return os.str();
}

std::vector<QueryNeighbors> to_query_neighbors(const std::vector<std::vector<Neighbor>>& results,
                                               const std::vector<std::string>& query_ids,
                                               const std::vector<std::string>& true_labels,
                                               const std::string& featurizer) {
  std::vector<QueryNeighbors> out(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    QueryNeighbors& q = out[i];
    q.query_id = query_ids.empty() ? "q" + std::to_string(i) : query_ids.at(i);
    q.image_id = q.query_id;
    q.featurizer = featurizer;
    if (!true_labels.empty()) q.true_labels = {true_labels.at(i)};
    for (const Neighbor& n : results[i]) {
      q.neighbor_ids.push_back(n.id);
      q.neighbor_labels.push_back(n.label);
      q.distances.push_back(n.distance);
    }
  }
  return out;
}

void apply_memory_pruning(const Memory& mem, EvalOptions& opt) {
  const std::string mode = mem.pruning_mode();
  if (mode == "none") return;
  for (const ItemInfo& it : mem.items()) {
    if (mode == "hard" && mem.excluded(it)) opt.exclude_ids.insert(it.id);
    if (mode == "soft" && it.reliability != 1.0) opt.reliability[it.id] = it.reliability;
  }
}

std::unordered_set<std::string> read_id_set(const std::string& path) {
  auto lines = read_lines(path);
  return {lines.begin(), lines.end()};
}

std::unordered_map<std::string, double> read_reliability_tsv(const std::string& path) {
  std::unordered_map<std::string, double> out;
  auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto tab = lines[i].rfind('\t');
    if (tab == std::string::npos)
      throw Error(path + ":" + std::to_string(i + 1) + ": expected id<TAB>weight");
    std::string id = lines[i].substr(0, tab);
    double w;
    try {
      size_t used = 0;
      w = std::stod(lines[i].substr(tab + 1), &used);
    } catch (const std::exception&) {
      throw Error(path + ":" + std::to_string(i + 1) + ": weight is not a number");
    }
    if (!std::isfinite(w) || w < 0) throw Error(path + ":" + std::to_string(i + 1) + ": weight must be finite and >= 0");
    if (!out.emplace(id, w).second) throw Error(path + ":" + std::to_string(i + 1) + ": duplicate id '" + id + "'");
  }
  return out;
}

}  // namespace vismem
