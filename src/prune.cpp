#include "prune.h"

#include <unordered_map>

#include "error.h"

namespace vismem {

double reliability_weight(int64_t wrong) { return wrong >= 1 ? 1.75 / (1.0 + static_cast<double>(wrong)) : 1.0; }

Memory::Counts compute_prune_counts(const Memory& mem, int k, int threads,
                                    const std::function<void(int64_t, int64_t)>& progress) {
  if (k < 1) throw Error("prune: k must be >= 1");
  std::vector<ItemInfo> items = mem.items();
  const int64_t n = static_cast<int64_t>(items.size());
  const int d = mem.dim();
  std::unordered_map<std::string, int64_t> pos;
  for (int64_t i = 0; i < n; ++i) pos[items[i].id] = i;
  Memory::Counts c;
  c.wrong.assign(n, 0);
  c.correct.assign(n, 0);
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
    auto res = mem.search(q.data(), b, k, self, threads);
    for (int64_t i = 0; i < b; ++i) {
      const std::string& qlabel = items[s + i].label;
      for (const Neighbor& nb : res[i]) {
        int64_t j = pos.at(nb.id);
        if (nb.label == qlabel) ++c.correct[j];
        else ++c.wrong[j];
      }
    }
    if (progress) progress(s + b, n);
  }
  return c;
}

}  // namespace vismem
