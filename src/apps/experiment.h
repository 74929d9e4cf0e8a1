// experiment.h: the paper's capabilities measured on labeled embedding sets
// (SPEC section 5): lifelong learning, pruning, memory-size scaling, hierarchy
// discovery, OOD detection and calibration. Each run returns a markdown
// report, SVG plots and the numbers as JSON.
//
// Basic usage:
//   vismem::ExperimentData data;                       // where the embedding sets come from
//   data.get = [&](const std::string& name) { ... };   // "tiny/train", "tiny/val", "imagenette/train", "imagenette/val"
//   data.memory = [&](const std::string& name) -> const vismem::Memory& { ... };  // the same set as a Memory
//   data.taxonomy = vismem::Taxonomy::read("hierarchy_wordnet.tsv");
//   vismem::ExperimentReport r = vismem::run_experiment("scaling", data, {.seed = 0});
//   // r.markdown, r.files (name -> SVG text), r.numbers (JSON)
//
// Everything is exact kNN (FlatIndex); randomness (subsets, class splits) comes
// from one seeded generator, so a run is reproducible.
// Thread safety: runs use the given threads; the callbacks are called from the calling thread.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval.h"
#include "memory.h"
#include "taxonomy.h"

namespace vismem {

// Labeled embeddings, in a fixed order (the order decides ties, SPEC section 2).
struct LabeledSet {
  int dim = 0;
  std::vector<std::string> ids, labels;
  std::vector<float> x;  // size() * dim, row-major, L2-normalized
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
};
LabeledSet load_set(const Memory& mem);                                   // insertion order
LabeledSet subset(const LabeledSet& s, const std::vector<int64_t>& rows);
LabeledSet concat(const LabeledSet& a, const LabeledSet& b);              // a's rows first (added first)
std::vector<int64_t> rows_with_labels(const LabeledSet& s, const std::vector<std::string>& labels);

// Exact K nearest neighbors of every query in mem (ties: earlier row first).
std::vector<QueryNeighbors> knn(const LabeledSet& mem, const LabeledSet& queries, int k, int threads = 0);

struct ExperimentData {
  std::function<const LabeledSet&(const std::string& name)> get;
  std::function<const Memory&(const std::string& name)> memory;  // for the pruning counts pass
  std::optional<Taxonomy> taxonomy;
  std::string description;  // where the sets came from (model, folders), for the report
};

struct ExperimentOptions {
  uint64_t seed = 0;
  int threads = 0;
  int k = 100;         // largest k evaluated (accuracy@k for k = 1..k)
  int seeds = 3;       // repetitions of random subsets (scaling)
};

struct ExperimentReport {
  std::string name, title, markdown;
  std::map<std::string, std::string> files;  // file name -> contents (SVG)
  nlohmann::ordered_json numbers;
};

// Names: lifelong, lifelong-split, pruning, scaling, hierarchy, ood.
const std::vector<std::string>& experiment_names();
// The sets a run needs (so the caller embeds only those).
std::vector<std::string> experiment_sets(const std::string& name);
ExperimentReport run_experiment(const std::string& name, const ExperimentData& data, const ExperimentOptions& opt);

// log10(err) = a * log10(log10(N)) + b by least squares (SPEC section 5); r2 of the fit.
struct ScalingFit {
  double a = 0, b = 0, r2 = 0;
  double predict(double n) const;
};
ScalingFit fit_scaling(const std::vector<double>& n, const std::vector<double>& err);

}  // namespace vismem
