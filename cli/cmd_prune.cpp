// prune: leave-one-out wrong/correct counts and the pruning mode classify/eval apply.
#include <iostream>

#include "common.h"
#include "error.h"
#include "prune.h"
#include "textio.h"

namespace vismem::cli {

void add_prune_commands(CLI::App& app) {
  auto* c = app.add_subcommand("prune", "Count each item's wrong/correct votes (leave-one-out) and set hard or soft pruning");
  struct A {
    std::string mem, out, mode;
    int k = 0, threads = 0;
    double threshold = -1;
    bool recompute = false;
  };
  auto a = std::make_shared<A>();
  c->add_option("memory", a->mem, "Memory file")->required();
  c->add_option("--k", a->k, "Neighbors per self-query (default: the stored counts' k, else 100)")->check(kPositiveInt);
  c->add_option("--out", a->out, "Write id<TAB>wrong<TAB>correct");
  c->add_option("--mode", a->mode, "none | hard (exclude items with wrong >= threshold) | soft (weight 1.75/(1+wrong))")
      ->check(CLI::IsMember({"none", "hard", "soft"}));
  c->add_option("--threshold", a->threshold, "Hard pruning: exclude items with wrong-count >= T");
  c->add_flag("--recompute", a->recompute, "Recompute the counts even if they are current");
  c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
  c->callback([a] {
    Memory mem = open_memory(a->mem);
    MemoryInfo info = mem.info();
    int k = a->k ? a->k : (info.counts_k ? info.counts_k : 100);
    bool current = info.counts_generation >= 0 && !info.counts_stale() && info.counts_k == k;
    if (!current || a->recompute) {
      if (info.counts_stale()) std::cerr << "counts are stale (the memory changed since they were computed): recomputing\n";
      Progress bar("self-queries", mem.size());
      Memory::Counts counts = compute_prune_counts(mem, k, a->threads, [&](int64_t d, int64_t) { bar.update(d); });
      bar.finish();
      // Counts and mode in one transaction: a kill never leaves new counts under the old mode.
      if (!a->mode.empty()) {
        if (a->mode == "hard" && a->threshold <= 0) throw Error("--mode hard needs --threshold T (> 0)");
        mem.set_counts(counts, k, a->mode, a->mode == "hard" ? a->threshold : 0);
        a->mode.clear();
      } else {
        mem.set_counts(counts, k);
      }
    } else {
      std::cerr << "counts are current (k=" << k << ")\n";
    }
    std::vector<ItemInfo> items = mem.items();
    int64_t ever_wrong = 0;
    for (const auto& it : items) ever_wrong += it.wrong > 0;
    if (!a->out.empty()) {
      std::string text;
      for (const auto& it : items)
        text += tsv_field(it.id, "id") + '\t' + std::to_string(it.wrong) + '\t' + std::to_string(it.correct) + '\n';
      write_text_file(a->out, text);
    }
    if (!a->mode.empty()) {
      if (a->mode == "hard" && a->threshold <= 0) throw Error("--mode hard needs --threshold T (> 0)");
      mem.set_pruning(a->mode, a->mode == "hard" ? a->threshold : 0);
    }
    int64_t excluded = 0;
    for (const auto& it : items) excluded += mem.excluded(it);
    std::cout << "k=" << k << ": " << ever_wrong << " of " << items.size() << " items were a wrong neighbor at least once";
    if (mem.info().pruning_mode == "hard")
      std::cout << "; hard pruning excludes " << excluded << " (" << 100.0 * excluded / std::max<size_t>(1, items.size())
                << "%)";
    std::cout << "; pruning mode: " << mem.info().pruning_mode << "\n";
  });
}

}  // namespace vismem::cli
