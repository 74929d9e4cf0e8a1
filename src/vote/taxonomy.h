// taxonomy.h: leaf labels with their root-to-leaf ancestor paths, cut at
// chosen depths, for a prediction per level (SPEC section 5, "Hierarchy").
//
// Basic usage:
//   auto tax = vismem::Taxonomy::read("hierarchy_wordnet.tsv");
//   tax.at_depth("n02124075", 4);          // "n00015388:animal"
//   vismem::NeighborVotes lvl = vismem::relabel(nv, tax, 4);   // the same vote, over ancestors
//
// File format: one line per leaf, `LEAF<TAB>A > B > ... > LEAF_NODE`, the path
// from the root (depth 0) to the leaf; lines starting with '#' and blank lines
// are skipped. Depth d is d steps below the root; a leaf whose path is shorter
// stays itself at deeper cuts (so a cut is a partition of the leaves). With
// WordNet (Tiny-ImageNet) depths 4/6/8 give 8/41/115 groups.
// Thread safety: immutable after read(); share freely.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "decision.h"
#include "neighbors.h"

namespace vismem {

class Taxonomy {
 public:
  static Taxonomy read(const std::string& path);
  // paths: leaf -> root-to-leaf node names (last = the leaf's own node).
  static Taxonomy from_paths(std::unordered_map<std::string, std::vector<std::string>> paths);

  bool has(const std::string& leaf) const { return paths_.count(leaf) != 0; }
  // The leaf's ancestor d steps below the root (its own node if the path is shorter).
  // Throws vismem::Error for a leaf not in the taxonomy.
  const std::string& at_depth(const std::string& leaf, int depth) const;
  int max_depth() const { return max_depth_; }  // longest path, in steps below the root
  size_t size() const { return paths_.size(); }
  // Distinct groups at a depth, over the given leaves.
  size_t groups(const std::vector<std::string>& leaves, int depth) const;
  // Throws naming up to 5 labels that are not leaves of the taxonomy.
  void check_covers(const std::vector<std::string>& labels, const std::string& what) const;

 private:
  std::unordered_map<std::string, std::vector<std::string>> paths_;
  int max_depth_ = 0;
};

// The same neighbor list with every label replaced by its ancestor at depth.
NeighborVotes relabel(const NeighborVotes& nv, const Taxonomy& tax, int depth);

// Neighbor lists (and true labels) with every label replaced by its ancestor
// at depth: accuracy at a level is evaluate() over these.
std::vector<QueryNeighbors> relabel(const std::vector<QueryNeighbors>& qs, const Taxonomy& tax, int depth);

// Levels "4,6,8" -> {4, 6, 8}: strictly increasing, each >= 1.
std::vector<int> parse_levels(const std::string& text);

// One prediction per level (the given depths, then the leaf), and with
// confident > 0 the deepest level whose rule score share is >= confident
// (SPEC: vote share; here the chosen rule's share of its total score, which
// is the plain vote share for plurality). -1 when no level is confident.
struct LevelDecision {
  std::string level;   // "depth 4", ..., "leaf"
  int depth = 0;       // -1 for the leaf level
  Decision decision;
};
struct HierarchyDecision {
  std::vector<LevelDecision> levels;
  int confident_level = -1;  // index into levels
};
HierarchyDecision decide_levels(Vote v, const NeighborVotes& nv, int k, const Taxonomy& tax,
                                const std::vector<int>& depths, double confident, const VoteParams& p = {});

}  // namespace vismem
