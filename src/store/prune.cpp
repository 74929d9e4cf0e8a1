#include "prune.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "linalg.h"

#include "error.h"

namespace vismem {

// Pruning counts are defined on the exact neighbors (SPEC section 4): an
// approximate index would make the incremental upkeep disagree with a recount.
static const SearchParams kExactSearch{.exact = true};


double reliability_weight(int64_t wrong) { return wrong >= 1 ? 1.75 / (1.0 + static_cast<double>(wrong)) : 1.0; }

Memory::Counts compute_prune_counts(const Memory& mem, int k, int threads,
                                    const std::function<void(int64_t, int64_t)>& progress) {
  if (k < 1) throw Error("prune: k must be >= 1");
  const int64_t generation = mem.info().generation;
  std::vector<ItemInfo> items = mem.items();
  const int64_t n = static_cast<int64_t>(items.size());
  const int d = mem.dim();
  std::unordered_map<std::string, int64_t> pos;
  for (int64_t i = 0; i < n; ++i) pos[items[i].id] = i;
  Memory::Counts c;
  c.generation = generation;
  c.wrong.assign(n, 0);
  c.correct.assign(n, 0);
  c.kth.assign(n, -1.0);  // -1: fewer than k other items, so no k-th neighbor
  for (const auto& it : items) c.ids.push_back(it.id);
  // Queries in blocks: bounded memory for big memories, one batched search each.
  const int64_t block = 2048;
  std::vector<float> q;
  for (int64_t s = 0; s < n; s += block) {
    int64_t b = std::min(block, n - s);
    q.resize(b * d);
    std::vector<std::string> self(b);
    for (int64_t i = 0; i < b; ++i) {
      std::vector<float> e = mem.embedding(items[s + i].id);
      std::copy(e.begin(), e.end(), q.begin() + i * d);
      self[i] = items[s + i].id;
    }
    auto res = mem.search(q.data(), b, k, self, threads, &kExactSearch);
    for (int64_t i = 0; i < b; ++i) {
      const std::string& qlabel = items[s + i].label;
      if (static_cast<int>(res[i].size()) == k) c.kth[s + i] = res[i].back().distance;
      for (const Neighbor& nb : res[i]) {
        auto at = pos.find(nb.id);
        if (at == pos.end())  // added by another process since the count began
          throw Error(mem.path() + ": the memory changed while the counts were computed (another writer); run prune again");
        const int64_t j = at->second;
        if (nb.label == qlabel) ++c.correct[j];
        else ++c.wrong[j];
      }
    }
    if (progress) progress(s + b, n);
  }
  return c;
}

namespace {

// Leave-one-out lists of the given items (by id), k each, in blocks; kth[i]:
// the k-th distance as the index computes it, -1 when the list is shorter.
struct LooLists {
  std::vector<std::vector<std::pair<std::string, std::string>>> lists;  // (id, label)
  std::vector<double> kth;
};
LooLists loo_lists(const Memory& mem, const std::vector<std::string>& ids, int k) {
  LooLists out;
  const int d = mem.dim();
  const size_t block = 1024;
  for (size_t s = 0; s < ids.size(); s += block) {
    size_t b = std::min(block, ids.size() - s);
    std::vector<float> q(b * d);
    std::vector<std::string> self(ids.begin() + s, ids.begin() + s + b);
    for (size_t i = 0; i < b; ++i) {
      auto e = mem.embedding(self[i]);
      std::copy(e.begin(), e.end(), q.begin() + i * d);
    }
    for (auto& nn : mem.search(q.data(), static_cast<int64_t>(b), k, self, 0, &kExactSearch)) {
      out.lists.emplace_back();
      for (auto& n : nn) out.lists.back().emplace_back(n.id, n.label);
      out.kth.push_back(static_cast<int>(nn.size()) == k ? nn.back().distance : -1.0);
    }
  }
  return out;
}

// Existing items q (not in skip) with d(q, x) <= kth(q) for some row x: the
// only ones whose lists a new or removed x can change. Distances come from
// sgemm here and from the index's fixed-order dot there, so the test carries
// a margin: a superset is harmless, the lists are searched again exactly.
std::vector<ItemInfo> affected(const Memory& mem, const float* x, int64_t n, const std::unordered_set<std::string>& skip) {
  std::vector<ItemInfo> items = mem.items(), out;
  const int d = mem.dim();
  const int64_t block = 4096;
  std::vector<float> mx, dots;
  for (size_t s = 0; s < items.size(); s += block) {
    int64_t b = std::min<int64_t>(block, static_cast<int64_t>(items.size() - s));
    mx.resize(b * d);
    for (int64_t i = 0; i < b; ++i) {
      auto e = mem.embedding(items[s + i].id);
      std::copy(e.begin(), e.end(), mx.begin() + i * d);
    }
    dots.resize(b * n);
    matmul(b, n, d, mx.data(), d, x, d, dots.data(), n, /*b_transposed=*/true);
    for (int64_t i = 0; i < b; ++i) {
      const ItemInfo& it = items[s + i];
      if (skip.count(it.id)) continue;
      double kth = it.kth < 0 ? std::numeric_limits<double>::infinity() : it.kth;
      for (int64_t j = 0; j < n; ++j)
        if (1.0 - dots[i * n + j] <= kth + 1e-4) {
          out.push_back(it);
          break;
        }
    }
  }
  return out;
}

}  // namespace

std::optional<CountsUpkeep> CountsUpkeep::before_add(const Memory& mem, const std::vector<std::string>& ids,
                                                     const float* x, int64_t n) {
  if (!mem.counts_current()) return std::nullopt;
  CountsUpkeep u;
  u.k_ = mem.info().counts_k;
  u.added_ = ids;
  for (auto& id : ids)
    if (mem.contains(id)) u.full_ = true;  // a replacement changes a label in place: recount all
  if (!u.full_) {
    for (auto& it : affected(mem, x, n, {})) {
      u.candidates_.push_back(it.id);
      u.candidate_labels_.push_back(it.label);
    }
    // Searching more than about half the memory again costs as much as a recount.
    if (2 * (u.candidates_.size() + ids.size()) > static_cast<size_t>(mem.size() + n)) u.full_ = true;
  }
  if (u.full_) u.candidates_.clear(), u.candidate_labels_.clear();
  else u.old_lists_ = loo_lists(mem, u.candidates_, u.k_).lists;
  return u;
}

std::optional<CountsUpkeep> CountsUpkeep::before_remove(const Memory& mem, const std::vector<std::string>& ids) {
  if (!mem.counts_current()) return std::nullopt;
  CountsUpkeep u;
  u.k_ = mem.info().counts_k;
  std::unordered_set<std::string> gone(ids.begin(), ids.end());
  std::vector<float> x;
  std::vector<std::string> present;
  for (auto& id : gone) {
    auto it = mem.item(id);
    if (!it) continue;
    present.push_back(id);
    u.removed_labels_.push_back(it->label);
    auto e = mem.embedding(id);
    x.insert(x.end(), e.begin(), e.end());
  }
  for (auto& it : affected(mem, x.data(), static_cast<int64_t>(present.size()), gone)) {
    u.candidates_.push_back(it.id);
    u.candidate_labels_.push_back(it.label);
  }
  if (2 * (u.candidates_.size() + present.size()) > static_cast<size_t>(mem.size())) {
    u.full_ = true;
    u.candidates_.clear();
    u.candidate_labels_.clear();
    u.removed_labels_.clear();
    return u;
  }
  u.old_lists_ = loo_lists(mem, u.candidates_, u.k_).lists;
  u.removed_lists_ = loo_lists(mem, present, u.k_).lists;
  return u;
}

void CountsUpkeep::after(Memory& mem) {
  if (full_) {
    mem.set_counts(compute_prune_counts(mem, k_), k_);
    recomputed_ = -1;
    return;
  }
  // Signed changes per neighbor id: (wrong, correct).
  std::unordered_map<std::string, std::pair<int64_t, int64_t>> delta;
  auto apply = [&](const std::string& qlabel, const List& list, int64_t sign) {
    for (auto& [id, label] : list) (label == qlabel ? delta[id].second : delta[id].first) += sign;
  };
  for (size_t i = 0; i < removed_lists_.size(); ++i) apply(removed_labels_[i], removed_lists_[i], -1);
  for (size_t i = 0; i < candidates_.size(); ++i) apply(candidate_labels_[i], old_lists_[i], -1);
  std::vector<std::string> searched = candidates_;
  std::vector<std::string> labels = candidate_labels_;
  for (auto& id : added_) {
    searched.push_back(id);
    labels.push_back(mem.item(id)->label);
  }
  LooLists fresh = loo_lists(mem, searched, k_);
  for (size_t i = 0; i < searched.size(); ++i) apply(labels[i], fresh.lists[i], +1);
  recomputed_ = static_cast<int64_t>(searched.size());
  Memory::Counts c;
  std::unordered_map<std::string, double> kth;
  for (size_t i = 0; i < searched.size(); ++i) kth[searched[i]] = fresh.kth[i];
  std::unordered_set<std::string> touched;
  for (auto& [id, dv] : delta) touched.insert(id);
  for (auto& [id, v] : kth) touched.insert(id);
  for (auto& id : touched) {
    auto it = mem.item(id);
    if (!it) continue;  // a removed item
    auto dv = delta.count(id) ? delta[id] : std::pair<int64_t, int64_t>{0, 0};
    c.ids.push_back(id);
    c.wrong.push_back(it->wrong + dv.first);
    c.correct.push_back(it->correct + dv.second);
    c.kth.push_back(kth.count(id) ? kth[id] : it->kth);
  }
  mem.set_counts(c, k_);
}

}  // namespace vismem
