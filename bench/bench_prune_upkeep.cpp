// bench_prune_upkeep: keeping pruning counts current across add/remove, the
// incremental upkeep (CountsUpkeep) against the baseline, a full recount
// (compute_prune_counts), on a copy of a real memory. Checks both agree.
//
//   bench_prune_upkeep MEMORY.db [--k 100] [--batch 50] [--reps 3]
//
// Each rep: remove `batch` random items (upkeep), add them back (upkeep),
// then recount everything. Prints medians and the ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "error.h"
#include "memory.h"
#include "prune.h"

namespace fs = std::filesystem;
using namespace vismem;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_prune_upkeep MEMORY.db [--k 100] [--batch 50] [--reps 3]\n");
    return 2;
  }
  int k = 100, batch = 50, reps = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--k")) k = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  try {
    fs::path tmp = fs::temp_directory_path() / "vismem_bench_upkeep.db";
    Memory::remove_files(tmp.string());
    Memory::copy_files(argv[1], tmp.string());
    Memory m = Memory::open(tmp.string());
    auto t0 = std::chrono::steady_clock::now();
    m.set_counts(compute_prune_counts(m, k), k);
    std::printf("memory %s: %lld items, d=%d, k=%d; first count %.2f s\n", argv[1], static_cast<long long>(m.size()),
                m.dim(), k, seconds_since(t0));
    std::mt19937 g(7);
    std::vector<double> t_remove, t_add, t_full;
    bool agree = true;
    for (int r = 0; r < reps; ++r) {
      auto items = m.items();
      std::shuffle(items.begin(), items.end(), g);
      items.resize(std::min<size_t>(batch, items.size()));
      std::vector<std::string> ids, labels;
      std::vector<float> x;
      for (auto& it : items) {
        ids.push_back(it.id);
        labels.push_back(it.label);
        auto e = m.embedding(it.id);
        x.insert(x.end(), e.begin(), e.end());
      }
      t0 = std::chrono::steady_clock::now();
      m.remove(ids);
      t_remove.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      m.add(ids, labels, x.data());
      t_add.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      Memory::Counts c = compute_prune_counts(m, k);
      t_full.push_back(seconds_since(t0));
      for (size_t i = 0; i < c.ids.size(); ++i) {
        ItemInfo it = *m.item(c.ids[i]);
        if (it.wrong != c.wrong[i] || it.correct != c.correct[i]) agree = false;
      }
    }
    double rm = median(t_remove), ad = median(t_add), full = median(t_full);
    std::printf("remove %d items + upkeep: %.3f s (median of %d)\n", batch, rm, reps);
    std::printf("add %d items + upkeep:    %.3f s\n", batch, ad);
    std::printf("full recount (baseline):  %.3f s\n", full);
    std::printf("ratio full / upkeep: remove %.1fx, add %.1fx; counts equal to the recount: %s\n", full / rm, full / ad,
                agree ? "yes" : "NO");
    Memory::remove_files(tmp.string());
    return agree ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
