#include "taxonomy.h"

#include <set>
#include <sstream>

#include "error.h"
#include "textio.h"

namespace vismem {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace

Taxonomy Taxonomy::from_paths(std::unordered_map<std::string, std::vector<std::string>> paths) {
  Taxonomy t;
  for (auto& [leaf, path] : paths) {
    if (leaf.empty() || path.empty()) throw Error("taxonomy: empty leaf or path");
    t.max_depth_ = std::max(t.max_depth_, static_cast<int>(path.size()) - 1);
  }
  t.paths_ = std::move(paths);
  return t;
}

Taxonomy Taxonomy::read(const std::string& path) {
  std::istringstream in(read_text_file(path));
  std::unordered_map<std::string, std::vector<std::string>> paths;
  std::string line;
  int no = 0;
  while (std::getline(in, line)) {
    ++no;
    std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    size_t tab = line.find('\t');
    std::string where = path + ":" + std::to_string(no);
    if (tab == std::string::npos) throw Error(where + ": expected LEAF<TAB>ROOT > ... > LEAF");
    std::string leaf = trim(line.substr(0, tab));
    std::vector<std::string> nodes;
    std::string rest = line.substr(tab + 1);
    size_t pos = 0;
    while (true) {
      size_t sep = rest.find(" > ", pos);
      std::string node = trim(rest.substr(pos, sep == std::string::npos ? std::string::npos : sep - pos));
      if (node.empty()) throw Error(where + ": empty node in the path");
      nodes.push_back(node);
      if (sep == std::string::npos) break;
      pos = sep + 3;
    }
    if (leaf.empty()) throw Error(where + ": empty leaf label");
    if (!paths.emplace(leaf, std::move(nodes)).second) throw Error(where + ": leaf " + leaf + " listed twice");
  }
  if (paths.empty()) throw Error(path + ": no taxonomy lines");
  return from_paths(std::move(paths));
}

const std::string& Taxonomy::at_depth(const std::string& leaf, int depth) const {
  auto it = paths_.find(leaf);
  if (it == paths_.end()) throw Error("label " + leaf + " is not in the taxonomy");
  const auto& p = it->second;
  return p[std::min<size_t>(static_cast<size_t>(std::max(depth, 0)), p.size() - 1)];
}

size_t Taxonomy::groups(const std::vector<std::string>& leaves, int depth) const {
  std::set<std::string> g;
  for (auto& l : leaves) g.insert(at_depth(l, depth));
  return g.size();
}

void Taxonomy::check_covers(const std::vector<std::string>& labels, const std::string& what) const {
  std::vector<std::string> missing;
  for (auto& l : labels)
    if (!has(l)) missing.push_back(l);
  if (missing.empty()) return;
  std::string msg = what + ": " + std::to_string(missing.size()) + " label(s) not in the taxonomy:";
  for (size_t i = 0; i < std::min<size_t>(5, missing.size()); ++i) msg += " " + missing[i];
  if (missing.size() > 5) msg += " ...";
  throw Error(msg);
}

NeighborVotes relabel(const NeighborVotes& nv, const Taxonomy& tax, int depth) {
  NeighborVotes out = nv;
  for (auto& l : out.labels) l = tax.at_depth(l, depth);
  return out;
}

std::vector<QueryNeighbors> relabel(const std::vector<QueryNeighbors>& qs, const Taxonomy& tax, int depth) {
  std::vector<QueryNeighbors> out = qs;
  for (auto& q : out) {
    for (auto& l : q.true_labels) l = tax.at_depth(l, depth);
    for (auto& l : q.neighbor_labels) l = tax.at_depth(l, depth);
  }
  return out;
}

std::vector<int> parse_levels(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    tok = trim(tok);
    size_t used = 0;
    int d = 0;
    try {
      d = std::stoi(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != tok.size() || d < 1) throw Error("levels: '" + tok + "' is not a depth >= 1");
    if (!out.empty() && d <= out.back()) throw Error("levels must increase: " + text);
    out.push_back(d);
  }
  if (out.empty()) throw Error("levels: none given");
  return out;
}

HierarchyDecision decide_levels(Vote v, const NeighborVotes& nv, int k, const Taxonomy& tax,
                                const std::vector<int>& depths, double confident, const VoteParams& p) {
  HierarchyDecision h;
  for (int d : depths) h.levels.push_back({"depth " + std::to_string(d), d, decide(v, relabel(nv, tax, d), k, p)});
  h.levels.push_back({"leaf", -1, decide(v, nv, k, p)});
  if (confident > 0)
    for (size_t i = 0; i < h.levels.size(); ++i)
      if (h.levels[i].decision.score_share >= confident) h.confident_level = static_cast<int>(i);
  return h;
}

}  // namespace vismem
