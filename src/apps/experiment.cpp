#include "experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "calibration.h"
#include "decision.h"
#include "error.h"
#include "flat_index.h"
#include "prune.h"
#include "svgplot.h"

namespace vismem {

// ---------------------------------------------------------------- sets, knn

LabeledSet load_set(const Memory& mem) {
  LabeledSet s;
  s.dim = mem.dim();
  auto items = mem.items();
  s.x.reserve(items.size() * static_cast<size_t>(s.dim));
  for (auto& it : items) {
    s.ids.push_back(it.id);
    s.labels.push_back(it.label);
    auto e = mem.embedding(it.id);
    s.x.insert(s.x.end(), e.begin(), e.end());
  }
  return s;
}

LabeledSet subset(const LabeledSet& s, const std::vector<int64_t>& rows) {
  LabeledSet o;
  o.dim = s.dim;
  o.x.reserve(rows.size() * static_cast<size_t>(s.dim));
  for (int64_t r : rows) {
    o.ids.push_back(s.ids.at(r));
    o.labels.push_back(s.labels.at(r));
    o.x.insert(o.x.end(), s.x.begin() + r * s.dim, s.x.begin() + (r + 1) * s.dim);
  }
  return o;
}

LabeledSet concat(const LabeledSet& a, const LabeledSet& b) {
  if (a.dim != b.dim && a.size() && b.size()) throw Error("concat: dimensions differ");
  LabeledSet o = a;
  o.dim = a.size() ? a.dim : b.dim;
  o.ids.insert(o.ids.end(), b.ids.begin(), b.ids.end());
  o.labels.insert(o.labels.end(), b.labels.begin(), b.labels.end());
  o.x.insert(o.x.end(), b.x.begin(), b.x.end());
  return o;
}

std::vector<int64_t> rows_with_labels(const LabeledSet& s, const std::vector<std::string>& labels) {
  std::unordered_set<std::string> want(labels.begin(), labels.end());
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < s.size(); ++i)
    if (want.count(s.labels[i])) rows.push_back(i);
  return rows;
}

std::vector<QueryNeighbors> knn(const LabeledSet& mem, const LabeledSet& q, int k, int threads) {
  if (mem.size() == 0) throw Error("knn: empty memory");
  k = static_cast<int>(std::min<int64_t>(k, mem.size()));
  FlatIndex idx(mem.dim);
  std::vector<int64_t> keys(mem.size());
  std::iota(keys.begin(), keys.end(), 0);
  idx.add(mem.size(), mem.x.data(), keys.data());
  std::vector<QueryNeighbors> out(q.size());
  const int64_t chunk = 2048;  // bounds the result buffers
  std::vector<float> dist;
  std::vector<int64_t> key;
  for (int64_t s = 0; s < q.size(); s += chunk) {
    int64_t n = std::min(chunk, q.size() - s);
    dist.resize(n * k);
    key.resize(n * k);
    idx.search(n, q.x.data() + s * q.dim, k, dist.data(), key.data(), threads);
    for (int64_t i = 0; i < n; ++i) {
      QueryNeighbors& o = out[s + i];
      o.query_id = o.image_id = q.ids[s + i];
      o.true_labels = {q.labels[s + i]};
      for (int j = 0; j < k; ++j) {
        int64_t m = key[i * k + j];
        o.neighbor_ids.push_back(mem.ids[m]);
        o.neighbor_labels.push_back(mem.labels[m]);
        o.distances.push_back(dist[i * k + j]);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- helpers

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
std::string pct(double v) { return fmt("%.2f", v); }

std::vector<std::string> distinct_labels(const LabeledSet& s) {
  std::set<std::string> l(s.labels.begin(), s.labels.end());
  return {l.begin(), l.end()};
}

EvalResult eval_k(const std::vector<QueryNeighbors>& qs, int k, EvalOptions opt = {}) {
  opt.k = k;
  return evaluate(qs, opt);
}

double at_k(const MethodResult& m, int k) { return m.accuracy_at_k.at(std::min<size_t>(k, m.accuracy_at_k.size()) - 1); }

// | rule | @10 | @50 | @100 | best (k) | rows for one result.
std::string accuracy_table(const std::vector<std::pair<std::string, EvalResult>>& rows) {
  std::string md = "| setting | rule | @1 | @10 | @50 | @100 | best (k) |\n|---|---|---|---|---|---|---|\n";
  for (auto& [name, r] : rows)
    for (Vote v : all_votes) {
      const MethodResult& m = r.methods.at(v);
      md += "| " + name + " | " + vote_name(v) + " | " + pct(at_k(m, 1)) + " | " + pct(at_k(m, 10)) + " | " +
            pct(at_k(m, 50)) + " | " + pct(at_k(m, 100)) + " | " + pct(m.best) + " (" + std::to_string(m.best_k) + ") |\n";
    }
  return md;
}

nlohmann::ordered_json result_json(const EvalResult& r) {
  nlohmann::ordered_json j;
  j["queries"] = r.queries;
  for (Vote v : all_votes) {
    const MethodResult& m = r.methods.at(v);
    j[vote_name(v)] = {{"at_1", at_k(m, 1)}, {"at_10", at_k(m, 10)}, {"at_50", at_k(m, 50)}, {"at_100", at_k(m, 100)},
                       {"best", m.best}, {"best_k", m.best_k}};
  }
  return j;
}

// Share of the first k neighbors that belong to the given labels, averaged over queries.
double share_of_neighbors(const std::vector<QueryNeighbors>& qs, const std::set<std::string>& labels, int k) {
  double s = 0;
  for (auto& q : qs) {
    int c = 0;
    for (int i = 0; i < k && i < static_cast<int>(q.neighbor_labels.size()); ++i) c += labels.count(q.neighbor_labels[i]);
    s += static_cast<double>(c) / k;
  }
  return qs.empty() ? 0 : 100.0 * s / static_cast<double>(qs.size());
}

// Queries whose prediction at k (rule v) differs between two runs over the same queries.
int64_t changed_predictions(const std::vector<QueryNeighbors>& a, const std::vector<QueryNeighbors>& b, Vote v, int k) {
  int64_t changed = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    NeighborVotes na{a[i].neighbor_labels, a[i].distances, {}, {}}, nb{b[i].neighbor_labels, b[i].distances, {}, {}};
    if (decide(v, na, k).prediction != decide(v, nb, k).prediction) ++changed;
  }
  return changed;
}

std::mt19937_64 rng_for(uint64_t seed, const std::string& what) {
  std::seed_seq sq{seed, static_cast<uint64_t>(std::hash<std::string>{}(what))};
  return std::mt19937_64(sq);
}

// Rows of each class in a seeded random order (nested subsets: the first n).
std::map<std::string, std::vector<int64_t>> shuffled_rows_by_class(const LabeledSet& s, std::mt19937_64& rng) {
  std::map<std::string, std::vector<int64_t>> by;
  for (int64_t i = 0; i < s.size(); ++i) by[s.labels[i]].push_back(i);
  for (auto& [l, rows] : by) std::shuffle(rows.begin(), rows.end(), rng);
  return by;
}

std::vector<std::string> shuffled_classes(const LabeledSet& s, std::mt19937_64& rng) {
  auto c = distinct_labels(s);
  std::shuffle(c.begin(), c.end(), rng);
  return c;
}

// ---------------------------------------------------------------- lifelong

ExperimentReport lifelong(const ExperimentData& data, const ExperimentOptions& opt) {
  const LabeledSet& old_train = data.get("tiny/train");
  const LabeledSet& old_val = data.get("tiny/val");
  const LabeledSet& new_train = data.get("imagenette/train");
  const LabeledSet& new_val = data.get("imagenette/val");
  auto old_labels = distinct_labels(old_train), new_labels = distinct_labels(new_train);
  std::set<std::string> new_set(new_labels.begin(), new_labels.end());
  for (auto& l : old_labels)
    if (new_set.count(l)) throw Error("lifelong: class " + l + " is in both datasets; the new classes must be disjoint");
  const int K = opt.k;
  auto before = knn(old_train, old_val, K, opt.threads);
  LabeledSet grown = concat(old_train, new_train);
  auto after = knn(grown, old_val, K, opt.threads);
  auto new_q = knn(grown, new_val, K, opt.threads);
  EvalResult rb = eval_k(before, K), ra = eval_k(after, K), rn = eval_k(new_q, K);
  ExperimentReport rep;
  rep.name = "lifelong";
  rep.title = "Lifelong learning: new classes from another dataset";
  std::string md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Memory: Tiny-ImageNet train (" + std::to_string(old_train.size()) + " items, " +
        std::to_string(old_labels.size()) + " classes). Then Imagenette train (" + std::to_string(new_train.size()) +
        " items, " + std::to_string(new_labels.size()) +
        " disjoint classes) is added with no training. Old-class queries: Tiny-ImageNet val (" +
        std::to_string(old_val.size()) + "); new-class queries: Imagenette val (" + std::to_string(new_val.size()) + ").\n\n";
  md += "## Old-class accuracy before and after, new-class accuracy (%)\n\n";
  md += "| rule | old before (best k) | old after (best k) | change (points) | new classes (best k) | old @10 before → after |\n|---|---|---|---|---|---|\n";
  nlohmann::ordered_json nums;
  double max_change = 0;
  for (Vote v : all_votes) {
    auto& b = rb.methods.at(v);
    auto& a = ra.methods.at(v);
    auto& n = rn.methods.at(v);
    double ch = a.best - b.best;
    max_change = std::max(max_change, std::abs(ch));
    md += "| " + vote_name(v) + " | " + pct(b.best) + " (" + std::to_string(b.best_k) + ") | " + pct(a.best) + " (" +
          std::to_string(a.best_k) + ") | " + fmt("%+.2f", ch) + " | " + pct(n.best) + " (" + std::to_string(n.best_k) +
          ") | " + pct(at_k(b, 10)) + " → " + pct(at_k(a, 10)) + " |\n";
    nums[vote_name(v)] = {{"old_before", b.best}, {"old_after", a.best}, {"change", ch}, {"new", n.best},
                          {"old_before_at_10", at_k(b, 10)}, {"old_after_at_10", at_k(a, 10)}};
  }
  int64_t changed = changed_predictions(before, after, Vote::rank, 10);
  double new_share = share_of_neighbors(after, new_set, 10);
  md += "\nLargest change of old-class accuracy over the four rules: **" + fmt("%.2f", max_change) +
        " points** (the paper: at most 0.04 on ImageNet). Rank voting at k=10 changed " + std::to_string(changed) +
        " of " + std::to_string(old_val.size()) + " old-class predictions; " + fmt("%.3f", new_share) +
        "% of the old queries' 10 nearest neighbors are new items.\n\n";
  md += "## Full tables\n\n" + accuracy_table({{"old, before", rb}, {"old, after", ra}, {"new classes", rn}});
  nums["max_abs_change"] = max_change;
  nums["changed_predictions_rank_at_10"] = changed;
  nums["new_items_in_old_top10_percent"] = new_share;
  rep.markdown = md;
  rep.numbers = nums;
  return rep;
}

ExperimentReport lifelong_split(const ExperimentData& data, const ExperimentOptions& opt) {
  const LabeledSet& train = data.get("tiny/train");
  const LabeledSet& val = data.get("tiny/val");
  auto rng = rng_for(opt.seed, "lifelong-split");
  auto classes = shuffled_classes(train, rng);
  size_t half = classes.size() / 2;
  std::vector<std::string> a(classes.begin(), classes.begin() + half), b(classes.begin() + half, classes.end());
  std::set<std::string> bset(b.begin(), b.end());
  LabeledSet train_a = subset(train, rows_with_labels(train, a)), train_b = subset(train, rows_with_labels(train, b));
  LabeledSet val_a = subset(val, rows_with_labels(val, a)), val_b = subset(val, rows_with_labels(val, b));
  const int K = opt.k;
  auto before = knn(train_a, val_a, K, opt.threads);
  LabeledSet grown = concat(train_a, train_b);
  auto after = knn(grown, val_a, K, opt.threads);
  auto new_q = knn(grown, val_b, K, opt.threads);
  // The same classes learned alone, for the new half's "before".
  auto b_alone = knn(train_b, val_b, K, opt.threads);
  EvalResult rb = eval_k(before, K), ra = eval_k(after, K), rn = eval_k(new_q, K), rba = eval_k(b_alone, K);
  ExperimentReport rep;
  rep.name = "lifelong-split";
  rep.title = "Lifelong learning: new classes from the same distribution";
  std::string md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Tiny-ImageNet's " + std::to_string(classes.size()) + " classes split at random (seed " +
        std::to_string(opt.seed) + ") into A (" + std::to_string(a.size()) + ") and B (" + std::to_string(b.size()) +
        "). Memory: train of A (" + std::to_string(train_a.size()) + " items); then train of B (" +
        std::to_string(train_b.size()) + " items) is added. Queries: val of A (" + std::to_string(val_a.size()) +
        ") and of B (" + std::to_string(val_b.size()) + ").\n\n";
  md += "| rule | A before (best k) | A after (best k) | change (points) | B in the grown memory | B alone |\n|---|---|---|---|---|---|\n";
  nlohmann::ordered_json nums;
  for (Vote v : all_votes) {
    auto& x = rb.methods.at(v);
    auto& y = ra.methods.at(v);
    md += "| " + vote_name(v) + " | " + pct(x.best) + " (" + std::to_string(x.best_k) + ") | " + pct(y.best) + " (" +
          std::to_string(y.best_k) + ") | " + fmt("%+.2f", y.best - x.best) + " | " + pct(rn.methods.at(v).best) +
          " | " + pct(rba.methods.at(v).best) + " |\n";
    nums[vote_name(v)] = {{"old_before", x.best}, {"old_after", y.best}, {"change", y.best - x.best},
                          {"new", rn.methods.at(v).best}, {"new_alone", rba.methods.at(v).best}};
  }
  int64_t changed = changed_predictions(before, after, Vote::rank, 10);
  double new_share = share_of_neighbors(after, bset, 10);
  md += "\nRank voting at k=10 changed " + std::to_string(changed) + " of " + std::to_string(val_a.size()) +
        " predictions for A's queries; " + fmt("%.2f", new_share) +
        "% of A's queries' 10 nearest neighbors are new (B) items.\n\n"
        "Why this is harder than adding another dataset's classes: adding items never changes the distance between "
        "a query and an old item, so an old query's prediction can change only where new items enter its "
        "neighborhood. Classes from the same distribution (same photo source, same 64 px upsampling, related "
        "categories) land inside the old classes' neighborhoods and compete for the vote; a doubled label set also "
        "gives every query more ways to be wrong. Classes from another source sit apart in embedding space and "
        "almost never enter an old query's neighbors. The grown memory is exactly the memory built from all classes "
        "at once (kNN has no order effect beyond tie-breaking), so there is no forgetting in the usual sense: the "
        "drop is the cost of the harder 2x-class task, not of learning in sequence.\n\n";
  md += "## Full tables\n\n" +
        accuracy_table({{"A, before", rb}, {"A, after", ra}, {"B, grown memory", rn}, {"B alone", rba}});
  nums["changed_predictions_rank_at_10"] = changed;
  nums["new_items_in_old_top10_percent"] = new_share;
  rep.markdown = md;
  rep.numbers = nums;
  return rep;
}

// ---------------------------------------------------------------- pruning

ExperimentReport pruning(const ExperimentData& data, const ExperimentOptions& opt) {
  const Memory& mem = data.memory("tiny/train");
  const LabeledSet& val = data.get("tiny/val");
  const LabeledSet& train = data.get("tiny/train");
  const int K = opt.k;
  auto qs = knn(train, val, K, opt.threads);
  Memory::Counts c100 = compute_prune_counts(mem, 100, opt.threads);
  Memory::Counts c10 = compute_prune_counts(mem, 10, opt.threads);
  EvalResult none = eval_k(qs, K);
  // Hard threshold sweep (counts with K = 100, as the paper). Wrong-counts
  // scale with the class sizes and k, so the sweep is by excluded share: T is
  // the smallest count whose exclusion stays within 0.5%, 1%, ... of the memory;
  // the paper's T = 128 is added as it is.
  std::vector<double> wrong_sorted(c100.wrong.begin(), c100.wrong.end());
  std::sort(wrong_sorted.begin(), wrong_sorted.end());
  const double n_items = static_cast<double>(wrong_sorted.size());
  auto excluded_at = [&](double t) {
    return static_cast<double>(wrong_sorted.end() - std::lower_bound(wrong_sorted.begin(), wrong_sorted.end(), t));
  };
  std::set<int64_t> tset = {128};
  int64_t report_t = 0;
  for (double share : {0.005, 0.01, 0.02, 0.05, 0.10, 0.20, 0.50}) {
    // Smallest T with excluded(T) <= share * N: scan the distinct counts upward.
    int64_t t = static_cast<int64_t>(wrong_sorted.back()) + 1;
    for (auto it = wrong_sorted.begin(); it != wrong_sorted.end(); it = std::upper_bound(it, wrong_sorted.end(), *it))
      if (*it >= 1 && excluded_at(*it) <= share * n_items) {
        t = static_cast<int64_t>(*it);
        break;
      }
    tset.insert(t);
    if (share == 0.02) report_t = t;
  }
  std::vector<int64_t> thresholds(tset.begin(), tset.end());
  ExperimentReport rep;
  rep.name = "pruning";
  rep.title = "Memory pruning: none, hard, soft";
  nlohmann::ordered_json nums;
  std::string sweep = "| threshold (wrong >= T) | excluded items | excluded % | plurality | distance | softmax | rank |\n|---|---|---|---|---|---|---|\n";
  Plot plot{"Hard pruning: best accuracy vs threshold", "threshold T (wrong-count with K=100)", "best accuracy (%)", true, false, {}};
  std::map<Vote, Series> ser;
  for (Vote v : all_votes) ser[v].name = vote_name(v);
  std::map<int64_t, EvalResult> by_t;
  for (int64_t t : thresholds) {
    EvalOptions eo;
    int64_t ex = 0;
    for (size_t i = 0; i < c100.ids.size(); ++i)
      if (c100.wrong[i] >= t) {
        eo.exclude_ids.insert(c100.ids[i]);
        ++ex;
      }
    EvalResult r = eval_k(qs, K, eo);
    by_t[t] = r;
    double share = 100.0 * ex / static_cast<double>(c100.ids.size());
    sweep += "| " + std::to_string(t) + " | " + std::to_string(ex) + " | " + pct(share);
    nlohmann::ordered_json jt = {{"excluded", ex}, {"excluded_percent", share}};
    for (Vote v : all_votes) {
      sweep += " | " + pct(r.methods.at(v).best);
      jt[vote_name(v)] = r.methods.at(v).best;
      ser[v].x.push_back(static_cast<double>(t));
      ser[v].y.push_back(r.methods.at(v).best);
    }
    sweep += " |\n";
    nums["hard_sweep"][std::to_string(t)] = jt;
  }
  for (Vote v : all_votes) plot.series.push_back(ser[v]);
  Series base{"none (rank)", {static_cast<double>(thresholds.front()), static_cast<double>(thresholds.back())},
              {none.methods.at(Vote::rank).best, none.methods.at(Vote::rank).best}, false, true};
  plot.series.push_back(base);
  EvalOptions soft;
  for (size_t i = 0; i < c10.ids.size(); ++i)
    if (c10.wrong[i] > 0) soft.reliability[c10.ids[i]] = reliability_weight(c10.wrong[i]);
  EvalResult rs = eval_k(qs, K, soft);
  EvalOptions soft100;
  for (size_t i = 0; i < c100.ids.size(); ++i)
    if (c100.wrong[i] > 0) soft100.reliability[c100.ids[i]] = reliability_weight(c100.wrong[i]);
  EvalResult rs100 = eval_k(qs, K, soft100);
  const EvalResult& rh = by_t.at(report_t);
  int64_t never_wrong10 = std::count(c10.wrong.begin(), c10.wrong.end(), 0);
  std::string md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Memory: Tiny-ImageNet train (" + std::to_string(train.size()) + " items); queries: Tiny-ImageNet val (" +
        std::to_string(val.size()) + "). Counts by leave-one-out self-query (SPEC section 4): K=100 for hard "
        "pruning, K=10 for soft pruning (as the paper). Median wrong-count (K=100): " +
        fmt("%g", wrong_sorted[wrong_sorted.size() / 2]) + ", max " + fmt("%g", wrong_sorted.back()) +
        "; with K=10, " + std::to_string(never_wrong10) + " items (" +
        pct(100.0 * never_wrong10 / static_cast<double>(c10.ids.size())) + "%) are never wrong (rho = 1).\n\n";
  md += "## Accuracy (%) with none / hard / soft pruning (the paper's Table 3 shape)\n\n";
  md += "Hard pruning reported at T = " + std::to_string(report_t) + " (" +
        pct(100.0 * excluded_at(static_cast<double>(report_t)) / n_items) +
        "% of the memory excluded): the sweep's setting closest to the paper's share, 2.05% (26,257 of 1.28M items "
        "at T=128, K=100). The paper's T=128 itself does not transfer: wrong-counts grow with how crowded the "
        "neighborhoods are (here 100 items per class of much less separable 64 px photos); its row is in the "
        "sweep. When every one of a query's neighbors is excluded the query votes without exclusions (SPEC), which "
        "is why very low thresholds fall back towards no pruning.\n\n";
  md += "| pruning | plurality | distance | softmax | rank |\n|---|---|---|---|---|\n";
  auto best_row = [&](const std::string& name, const EvalResult& r) {
    std::string row = "| " + name;
    for (Vote v : all_votes) row += " | " + pct(r.methods.at(v).best) + " (k=" + std::to_string(r.methods.at(v).best_k) + ")";
    return row + " |\n";
  };
  md += best_row("none", none) + best_row("hard, T=" + std::to_string(report_t), rh) + best_row("soft (K=10)", rs) +
        best_row("soft (K=100)", rs100);
  md += "\nBest k in parentheses. The paper (ImageNet, DINOv2 ViT-L/14): none 83.2/83.3/83.6/83.6, soft "
        "83.6/83.6/83.9/84.1.\n\n## Hard threshold sweep (best accuracy, %)\n\n" + sweep +
        "\n![hard pruning sweep](pruning_sweep.svg)\n\n## Full tables\n\n" +
        accuracy_table({{"none", none}, {"hard T=" + std::to_string(report_t), rh}, {"soft K=10", rs}, {"soft K=100", rs100}});
  nums["reported_hard_threshold"] = report_t;
  nums["none"] = result_json(none);
  nums["hard"] = result_json(rh);
  nums["soft"] = result_json(rs);
  nums["soft_k100"] = result_json(rs100);
  rep.markdown = md;
  rep.numbers = nums;
  rep.files["pruning_sweep.svg"] = render_svg(plot);
  return rep;
}

// ---------------------------------------------------------------- scaling

ExperimentReport scaling(const ExperimentData& data, const ExperimentOptions& opt) {
  const LabeledSet& train = data.get("tiny/train");
  const LabeledSet& val = data.get("tiny/val");
  std::vector<int> per_class = {1, 2, 5, 10, 20, 50, 100};
  size_t max_per_class = 0;
  {
    std::map<std::string, size_t> cnt;
    for (auto& l : train.labels) max_per_class = std::max(max_per_class, ++cnt[l]);
  }
  const int seeds = std::max(1, opt.seeds);
  std::map<Vote, std::vector<double>> err_mean, err_sd;
  std::vector<double> sizes;
  std::string table = "| items/class | memory size N | plurality | distance | softmax | rank |\n|---|---|---|---|---|---|\n";
  nlohmann::ordered_json nums;
  for (int n : per_class) {
    if (static_cast<size_t>(n) > max_per_class) break;
    std::map<Vote, std::vector<double>> errs;
    double N = 0;
    // The full set is one subset whatever the seed: run it once.
    int runs = static_cast<size_t>(n) >= max_per_class ? 1 : seeds;
    for (int s = 0; s < runs; ++s) {
      auto rng = rng_for(opt.seed + static_cast<uint64_t>(s), "scaling");
      auto by = shuffled_rows_by_class(train, rng);
      std::vector<int64_t> rows;
      for (auto& [l, r] : by)
        rows.insert(rows.end(), r.begin(), r.begin() + std::min<size_t>(n, r.size()));
      std::sort(rows.begin(), rows.end());  // keep the set's order for ties
      LabeledSet m = subset(train, rows);
      N = static_cast<double>(m.size());
      auto qs = knn(m, val, opt.k, opt.threads);
      EvalResult r = eval_k(qs, static_cast<int>(std::min<int64_t>(opt.k, m.size())));
      for (Vote v : all_votes) errs[v].push_back(100.0 - r.methods.at(v).best);
    }
    sizes.push_back(N);
    table += "| " + std::to_string(n) + " | " + fmt("%.0f", N);
    nlohmann::ordered_json jn = {{"N", N}, {"runs", runs}};
    for (Vote v : all_votes) {
      auto& e = errs[v];
      double mu = std::accumulate(e.begin(), e.end(), 0.0) / static_cast<double>(e.size()), var = 0;
      for (double x : e) var += (x - mu) * (x - mu);
      double sd = e.size() > 1 ? std::sqrt(var / static_cast<double>(e.size() - 1)) : 0;
      err_mean[v].push_back(mu);
      err_sd[v].push_back(sd);
      table += " | " + pct(mu) + (e.size() > 1 ? " ± " + fmt("%.2f", sd) : "");
      jn[vote_name(v)] = {{"error", mu}, {"sd", sd}};
    }
    table += " |\n";
    nums["points"][std::to_string(n)] = jn;
  }
  ExperimentReport rep;
  rep.name = "scaling";
  rep.title = "Memory size scaling";
  Plot plot{"Error vs memory size (Tiny-ImageNet val)", "memory size N (items)", "top-1 error (%)", true, true, {}};
  std::string fits = "| rule | a | b | R² | predicted error at N = 1M |\n|---|---|---|---|---|\n";
  for (Vote v : all_votes) {
    ScalingFit f = fit_scaling(sizes, err_mean[v]);
    fits += "| " + vote_name(v) + " | " + fmt("%.3f", f.a) + " | " + fmt("%.3f", f.b) + " | " + fmt("%.4f", f.r2) +
            " | " + pct(f.predict(1e6)) + " |\n";
    nums["fit"][vote_name(v)] = {{"a", f.a}, {"b", f.b}, {"r2", f.r2}};
    plot.series.push_back({vote_name(v), sizes, err_mean[v]});
    if (v == Vote::rank || v == Vote::plurality) {
      Series s{vote_name(v) + " fit", {}, {}, false, true};
      for (double x = sizes.front(); x <= sizes.back() * 1.0001; x *= 1.2) {
        s.x.push_back(x);
        s.y.push_back(f.predict(x));
      }
      plot.series.push_back(s);
    }
  }
  std::string md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Memory: n items per class drawn at random from Tiny-ImageNet train (nested subsets; " + std::to_string(seeds) +
        " draws per size, mean ± sd; the full set once). Queries: Tiny-ImageNet val (" + std::to_string(val.size()) +
        "). Error = 100 - best accuracy over k = 1..min(" + std::to_string(opt.k) + ", N).\n\n## Top-1 error (%)\n\n" +
        table + "\n## Fit log10(err) = a · log10(log10(N)) + b (SPEC section 5)\n\n" + fits +
        "\n![error vs memory size](scaling.svg)\n";
  rep.markdown = md;
  rep.numbers = nums;
  rep.files["scaling.svg"] = render_svg(plot);
  return rep;
}

// ---------------------------------------------------------------- hierarchy

ExperimentReport hierarchy(const ExperimentData& data, const ExperimentOptions& opt) {
  if (!data.taxonomy) throw Error("the hierarchy experiment needs a taxonomy (--taxonomy FILE)");
  const Taxonomy& tax = *data.taxonomy;
  const LabeledSet& train = data.get("tiny/train");
  const LabeledSet& val = data.get("tiny/val");
  auto classes = distinct_labels(train);
  tax.check_covers(classes, "tiny/train");
  const std::vector<int> depths = {4, 6, 8};
  const std::vector<int> ns = {0, 1, 2, 5, 10, 20, 50, 100};
  const int k = 10;
  const Vote vote = Vote::rank;
  auto rng = rng_for(opt.seed, "hierarchy");
  auto by = shuffled_rows_by_class(train, rng);
  size_t largest = 0;
  for (auto& [l, r] : by) largest = std::max(largest, r.size());
  // Exact trick: a query's top-k in "all other classes + n exemplars of its own
  // class" is the merge of its top-k among other classes and those exemplars.
  // Searching the full memory with k + largest class size finds both.
  const int K = static_cast<int>(std::min<int64_t>(k + static_cast<int64_t>(largest), train.size()));
  auto full = knn(train, val, K, opt.threads);
  std::unordered_map<std::string, int64_t> row_of;
  for (int64_t i = 0; i < train.size(); ++i) row_of[train.ids[i]] = i;
  std::string md;
  nlohmann::ordered_json nums;
  std::map<int, std::map<std::string, double>> acc;  // n -> level -> accuracy
  std::map<int, std::map<std::string, int64_t>> confident_at;
  std::map<int, double> confident_acc;
  const double T = 0.5;
  std::vector<std::string> level_names;
  for (int d : depths) level_names.push_back("depth " + std::to_string(d));
  level_names.push_back("leaf");
  for (int n : ns) {
    std::map<std::string, int64_t> correct;
    int64_t answered_correct = 0, total = 0;
    for (auto& q : full) {
      const std::string& c = q.true_labels[0];
      auto& rows = by.at(c);
      std::unordered_set<int64_t> chosen(rows.begin(), rows.begin() + std::min<size_t>(n, rows.size()));
      // Merge by (distance, row): the full list is already in that order, so
      // filtering keeps it; the chosen exemplars missing from it cannot reach the top k.
      NeighborVotes nv;
      for (size_t i = 0; i < q.neighbor_ids.size() && static_cast<int>(nv.labels.size()) < k; ++i) {
        int64_t r = row_of.at(q.neighbor_ids[i]);
        if (q.neighbor_labels[i] == c && !chosen.count(r)) continue;
        nv.labels.push_back(q.neighbor_labels[i]);
        nv.distances.push_back(q.distances[i]);
      }
      if (static_cast<int>(nv.labels.size()) < k) throw Error("hierarchy: too few neighbors");
      HierarchyDecision h = decide_levels(vote, nv, k, tax, depths, T);
      for (size_t l = 0; l < h.levels.size(); ++l) {
        std::string truth = h.levels[l].depth < 0 ? c : tax.at_depth(c, h.levels[l].depth);
        if (h.levels[l].decision.prediction == truth) ++correct[level_names[l]];
      }
      std::string at = h.confident_level < 0 ? "none" : level_names[h.confident_level];
      ++confident_at[n][at];
      if (h.confident_level >= 0) {
        auto& L = h.levels[h.confident_level];
        std::string truth = L.depth < 0 ? c : tax.at_depth(c, L.depth);
        answered_correct += L.decision.prediction == truth;
      }
      ++total;
    }
    for (auto& ln : level_names) acc[n][ln] = 100.0 * static_cast<double>(correct[ln]) / static_cast<double>(total);
    int64_t answered = total - confident_at[n]["none"];
    confident_acc[n] = answered ? 100.0 * answered_correct / static_cast<double>(answered) : 0;
  }
  ExperimentReport rep;
  rep.name = "hierarchy";
  rep.title = "Hierarchy: discovering a held-out class";
  md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Taxonomy: WordNet hypernym paths (hierarchy_wordnet.tsv), cut at depths 4/6/8 (" +
        std::to_string(tax.groups(classes, 4)) + "/" + std::to_string(tax.groups(classes, 6)) + "/" +
        std::to_string(tax.groups(classes, 8)) + " groups over the " + std::to_string(classes.size()) +
        " classes) plus the leaf. Every class in turn is held out: its val queries (50) are classified by a memory "
        "of all other classes' train items plus n of its own (random, nested), with rank voting at k = " +
        std::to_string(k) + " over the neighbors' ancestors at each level. Exact (computed by merging each query's "
        "neighbor list), averaged over all " + std::to_string(val.size()) + " val queries.\n\n";
  md += "## Accuracy per level (%) vs exemplars n of the new class\n\n| n | depth 4 | depth 6 | depth 8 | leaf | answered at T=" +
        fmt("%.1f", T) + ": depth 4 / 6 / 8 / leaf / none (%) | accuracy of the confident answer |\n|---|---|---|---|---|---|---|\n";
  Plot plot{"Discovery: accuracy per level vs exemplars of the new class", "n + 1 (n = exemplars)", "accuracy (%)", true, false, {}};
  std::map<std::string, Series> ser;
  for (auto& ln : level_names) ser[ln].name = ln;
  for (int n : ns) {
    md += "| " + std::to_string(n);
    nlohmann::ordered_json jn;
    for (auto& ln : level_names) {
      md += " | " + pct(acc[n][ln]);
      jn[ln] = acc[n][ln];
      ser[ln].x.push_back(n + 1.0);
      ser[ln].y.push_back(acc[n][ln]);
    }
    md += " | ";
    double tot = static_cast<double>(val.size());
    std::vector<std::string> parts;
    for (auto& ln : level_names) parts.push_back(fmt("%.1f", 100.0 * confident_at[n][ln] / tot));
    parts.push_back(fmt("%.1f", 100.0 * confident_at[n]["none"] / tot));
    for (size_t i = 0; i < parts.size(); ++i) md += (i ? " / " : "") + parts[i];
    md += " | " + pct(confident_acc[n]) + " |\n";
    jn["confident_accuracy"] = confident_acc[n];
    nums["n"][std::to_string(n)] = jn;
  }
  for (auto& ln : level_names) plot.series.push_back(ser[ln]);
  md += "\nAt n = 0 the leaf is unreachable by construction (0%); the coarser levels show what the memory knows "
        "about a class it has never seen. The paper reports 35.2% genus accuracy at n = 0 on iNaturalist (a "
        "different taxonomy and dataset; the closest analogue here is the deepest cut).\n\n"
        "`--confident T` answers at the deepest level whose score share is at least T; the table shows where the "
        "queries were answered at T = 0.5 and how often that answer was right.\n\n![discovery curve](discovery.svg)\n";
  rep.markdown = md;
  rep.numbers = nums;
  rep.files["discovery.svg"] = render_svg(plot);
  return rep;
}

// ---------------------------------------------------------------- OOD, calibration

std::vector<double> ood_scores(const std::vector<QueryNeighbors>& qs, int k, bool mean) {
  std::vector<double> s;
  for (auto& q : qs) {
    if (mean) s.push_back(std::accumulate(q.distances.begin(), q.distances.begin() + k, 0.0) / k);
    else s.push_back(ood_score(q.distances, k));
  }
  return s;
}

Series roc(const std::vector<double>& in, const std::vector<double>& out, const std::string& name) {
  std::vector<double> th(in.begin(), in.end());
  th.insert(th.end(), out.begin(), out.end());
  std::sort(th.begin(), th.end());
  Series s{name, {0}, {0}, false};
  const size_t steps = 200;
  for (size_t i = steps; i-- > 0;) {
    double t = th[i * (th.size() - 1) / steps];
    double fpr = std::count_if(in.begin(), in.end(), [t](double x) { return x > t; }) / static_cast<double>(in.size());
    double tpr = std::count_if(out.begin(), out.end(), [t](double x) { return x > t; }) / static_cast<double>(out.size());
    s.x.push_back(fpr);
    s.y.push_back(tpr);
  }
  s.x.push_back(1);
  s.y.push_back(1);
  return s;
}

ExperimentReport ood(const ExperimentData& data, const ExperimentOptions& opt) {
  const LabeledSet& train = data.get("tiny/train");
  const LabeledSet& val = data.get("tiny/val");
  const LabeledSet& other = data.get("imagenette/val");
  const int K = static_cast<int>(std::min<int64_t>(opt.k, train.size()));
  auto in_q = knn(train, val, K, opt.threads);
  auto out_q = knn(train, other, K, opt.threads);
  // Same-source OOD: classes of Tiny-ImageNet the memory has never seen.
  auto rng = rng_for(opt.seed, "ood-split");
  auto classes = shuffled_classes(train, rng);
  std::vector<std::string> a(classes.begin(), classes.begin() + classes.size() / 2),
      b(classes.begin() + classes.size() / 2, classes.end());
  LabeledSet train_a = subset(train, rows_with_labels(train, a));
  auto in_a = knn(train_a, subset(val, rows_with_labels(val, a)), K, opt.threads);
  auto out_b = knn(train_a, subset(val, rows_with_labels(val, b)), K, opt.threads);
  nlohmann::ordered_json nums;
  std::string auc_table = "| OOD set | score | AUROC |\n|---|---|---|\n";
  Plot rocp{"ROC: Tiny-ImageNet val (in) vs OOD queries", "false-positive rate", "true-positive rate", false, false, {}};
  struct Case {
    std::string name;
    const std::vector<QueryNeighbors>* in;
    const std::vector<QueryNeighbors>* out;
  };
  std::vector<Case> cases = {{"Imagenette val (other dataset)", &in_q, &out_q},
                             {"Tiny-ImageNet, 101 unseen classes", &in_a, &out_b}};
  for (auto& c : cases)
    for (auto [k, mean] : std::vector<std::pair<int, bool>>{{K, false}, {K, true}, {std::min(10, K), false}}) {
      auto si = ood_scores(*c.in, k, mean), so = ood_scores(*c.out, k, mean);
      double au = auroc(si, so);
      std::string score = std::string(mean ? "mean" : "median") + " distance to " + std::to_string(k);
      auc_table += "| " + c.name + " | " + score + " | " + fmt("%.4f", au) + " |\n";
      nums["auroc"][c.name][score] = au;
      if (k == K && !mean) rocp.series.push_back(roc(si, so, c.name));
    }
  rocp.series.push_back({"chance", {0, 1}, {0, 1}, false, true});
  // Threshold fitted on one half of the in-distribution queries, checked on the other.
  auto si = ood_scores(in_q, K, false), so = ood_scores(out_q, K, false);
  std::vector<size_t> perm(si.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<double> fit_half, test_half;
  for (size_t i = 0; i < perm.size(); ++i) (i % 2 ? test_half : fit_half).push_back(si[perm[i]]);
  std::string thr_table = "| target FPR | threshold | FPR on held-out in-dist half | TPR on Imagenette | TPR on unseen Tiny classes |\n|---|---|---|---|---|\n";
  auto sb = ood_scores(out_b, K, false), sa = ood_scores(in_a, K, false);
  for (double fpr : {0.01, 0.05, 0.10}) {
    double t = fit_ood_threshold(fit_half, fpr);
    auto above = [t](const std::vector<double>& v) {
      return std::count_if(v.begin(), v.end(), [t](double x) { return x > t; }) / static_cast<double>(v.size());
    };
    // The same-source case has its own memory (half the classes): its own threshold.
    double tb = fit_ood_threshold(sa, fpr);
    double tpr_b = std::count_if(sb.begin(), sb.end(), [tb](double x) { return x > tb; }) / static_cast<double>(sb.size());
    thr_table += "| " + pct(100 * fpr) + "% | " + fmt("%.4f", t) + " | " + pct(100 * above(test_half)) + "% | " +
                 pct(100 * above(so)) + "% | " + pct(100 * tpr_b) + "% |\n";
    nums["threshold"][fmt("%.2f", fpr)] = {{"threshold", t}, {"heldout_fpr", above(test_half)}, {"tpr_imagenette", above(so)},
                                          {"tpr_unseen_tiny", tpr_b}};
  }
  // Calibration on in-distribution queries: plurality at k, vote share as confidence.
  std::string cal;
  Plot relp{"Reliability: vote share vs accuracy (plurality)", "vote share (plurality count / k)", "accuracy", false, false, {}};
  for (int k : {10, std::min(100, K)}) {
    std::vector<double> conf, ent;
    std::vector<uint8_t> ok;
    for (auto& q : in_q) {
      NeighborVotes nv{q.neighbor_labels, q.distances, {}, {}};
      Decision d = decide(Vote::plurality, nv, k);
      conf.push_back(d.vote_share);
      ent.push_back(d.entropy);
      ok.push_back(d.prediction == q.true_labels[0]);
    }
    auto bins = reliability_bins(conf, ok, 10);
    double e = expected_calibration_error(bins);
    double accuracy = 100.0 * std::accumulate(ok.begin(), ok.end(), 0.0) / static_cast<double>(ok.size());
    cal += "### k = " + std::to_string(k) + " (accuracy " + pct(accuracy) + "%, ECE " + fmt("%.4f", e) + ")\n\n";
    cal += "| vote share | queries | mean share | accuracy |\n|---|---|---|---|\n";
    Series s{"k=" + std::to_string(k), {}, {}};
    for (auto& b : bins) {
      if (!b.count) continue;
      cal += "| " + fmt("%.1f", b.lo) + "–" + fmt("%.1f", b.hi) + " | " + std::to_string(b.count) + " | " +
             fmt("%.3f", b.mean_confidence) + " | " + fmt("%.3f", b.accuracy) + " |\n";
      s.x.push_back(b.mean_confidence);
      s.y.push_back(b.accuracy);
    }
    relp.series.push_back(s);
    auto ebins = reliability_bins(ent, ok, 5);
    cal += "\n| normalized entropy | queries | accuracy |\n|---|---|---|\n";
    for (auto& b : ebins)
      if (b.count)
        cal += "| " + fmt("%.1f", b.lo) + "–" + fmt("%.1f", b.hi) + " | " + std::to_string(b.count) + " | " +
               fmt("%.3f", b.accuracy) + " |\n";
    cal += "\n";
    nums["calibration"]["k" + std::to_string(k)] = {{"accuracy", accuracy}, {"ece", e}};
  }
  relp.series.push_back({"perfect calibration", {0, 1}, {0, 1}, false, true});
  // Abstaining: accuracy on the in-distribution queries kept at the 5% threshold.
  double t5 = fit_ood_threshold(fit_half, 0.05);
  int64_t kept = 0, kept_ok = 0, all_ok = 0;
  for (size_t i = 0; i < in_q.size(); ++i) {
    NeighborVotes nv{in_q[i].neighbor_labels, in_q[i].distances, {}, {}};
    bool ok = decide(Vote::rank, nv, std::min(10, K)).prediction == in_q[i].true_labels[0];
    all_ok += ok;
    if (si[i] <= t5) {
      ++kept;
      kept_ok += ok;
    }
  }
  ExperimentReport rep;
  rep.name = "ood";
  rep.title = "Out-of-distribution detection and calibration";
  std::string md = "# " + rep.title + "\n\n" + data.description + "\n\n";
  md += "Memory: Tiny-ImageNet train (" + std::to_string(train.size()) +
        " items). In-distribution queries: Tiny-ImageNet val (" + std::to_string(val.size()) +
        "). OOD queries: Imagenette val (" + std::to_string(other.size()) +
        ", classes disjoint from the memory's), and, harder, Tiny-ImageNet val of 101 classes held out of a memory "
        "built from the other 101. OOD score: median distance to the first " + std::to_string(K) +
        " neighbors (SPEC section 5); larger = more out of distribution.\n\n## AUROC\n\n" + auc_table +
        "\n![ROC](ood_roc.svg)\n\n## Threshold fitted to a target false-positive rate\n\nFitted on a random half "
        "of Tiny-ImageNet val, checked on the other half (`vismem ood-fit` does the fitting; `classify --abstain` "
        "uses it).\n\n" + thr_table;
  md += "\nAbstaining at the 5% threshold keeps " + std::to_string(kept) + " of " + std::to_string(in_q.size()) +
        " in-distribution queries; rank@10 accuracy on the kept ones is " + pct(100.0 * kept_ok / std::max<int64_t>(kept, 1)) +
        "% (all queries: " + pct(100.0 * all_ok / static_cast<double>(in_q.size())) + "%).\n\n";
  md += "## Calibration (in-distribution, plurality vote)\n\nConfidence = vote share (plurality count / k); ECE over "
        "10 equal-width bins. Normalized entropy = entropy of the k neighbor labels / log k.\n\n" + cal +
        "![reliability](calibration.svg)\n";
  nums["abstain"] = {{"threshold", t5}, {"kept", kept}, {"kept_accuracy", 100.0 * kept_ok / std::max<int64_t>(kept, 1)},
                     {"all_accuracy", 100.0 * all_ok / static_cast<double>(in_q.size())}};
  rep.markdown = md;
  rep.numbers = nums;
  rep.files["ood_roc.svg"] = render_svg(rocp);
  rep.files["calibration.svg"] = render_svg(relp);
  return rep;
}

}  // namespace

// ---------------------------------------------------------------- registry

double ScalingFit::predict(double n) const { return std::pow(10.0, a * std::log10(std::log10(n)) + b); }

ScalingFit fit_scaling(const std::vector<double>& n, const std::vector<double>& err) {
  if (n.size() != err.size()) throw Error("scaling fit: length mismatch");
  std::vector<double> xs, ys;
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] > 10 && err[i] > 0) {  // log10(log10(N)) needs N > 10
      xs.push_back(std::log10(std::log10(n[i])));
      ys.push_back(std::log10(err[i]));
    }
  if (xs.size() < 2) throw Error("scaling fit: need two points with N > 10 and error > 0");
  double mx = std::accumulate(xs.begin(), xs.end(), 0.0) / xs.size(), my = std::accumulate(ys.begin(), ys.end(), 0.0) / ys.size();
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    sxx += (xs[i] - mx) * (xs[i] - mx);
    sxy += (xs[i] - mx) * (ys[i] - my);
    syy += (ys[i] - my) * (ys[i] - my);
  }
  if (sxx == 0) throw Error("scaling fit: all memory sizes are equal");
  ScalingFit f;
  f.a = sxy / sxx;
  f.b = my - f.a * mx;
  double sse = 0;
  for (size_t i = 0; i < xs.size(); ++i) sse += std::pow(ys[i] - (f.a * xs[i] + f.b), 2);
  f.r2 = syy > 0 ? 1 - sse / syy : 1;
  return f;
}

const std::vector<std::string>& experiment_names() {
  static const std::vector<std::string> n = {"lifelong", "lifelong-split", "pruning", "scaling", "hierarchy", "ood"};
  return n;
}

std::vector<std::string> experiment_sets(const std::string& name) {
  if (name == "lifelong") return {"tiny/train", "tiny/val", "imagenette/train", "imagenette/val"};
  if (name == "ood") return {"tiny/train", "tiny/val", "imagenette/val"};
  if (name == "lifelong-split" || name == "pruning" || name == "scaling" || name == "hierarchy")
    return {"tiny/train", "tiny/val"};
  std::string all;
  for (auto& n : experiment_names()) all += " " + n;
  throw Error("unknown experiment '" + name + "'; one of:" + all);
}

ExperimentReport run_experiment(const std::string& name, const ExperimentData& data, const ExperimentOptions& opt) {
  experiment_sets(name);  // validates the name
  if (opt.k < 1) throw Error("experiment: k must be positive");
  if (name == "lifelong") return lifelong(data, opt);
  if (name == "lifelong-split") return lifelong_split(data, opt);
  if (name == "pruning") return pruning(data, opt);
  if (name == "scaling") return scaling(data, opt);
  if (name == "hierarchy") return hierarchy(data, opt);
  return ood(data, opt);
}

}  // namespace vismem
