// index: the approximate index of a memory (info, set, rebuild, tune), and
// the search options every searching command takes.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "error.h"
#include "index_tune.h"
#include "json_text.h"

namespace vismem::cli {

SearchParams& cli_search_params() {
  static SearchParams p;
  return p;
}

void add_search_options(CLI::App* c) {
  SearchParams& p = cli_search_params();
  c->add_option("--nprobe", p.nprobe, "IVF index: inverted lists visited per query (default: the memory's, see `vismem index tune`)")
      ->check(kPositiveInt);
  c->add_option("--ef", p.ef, "HNSW index: efSearch, the candidate list size (default: the memory's)")->check(kPositiveInt);
  c->add_option("--k-factor", p.k_factor, "Approximate index: candidates per neighbor re-scored with exact vectors (default 4 for compressed codes, else 2)")
      ->check(kPositiveInt);
  c->add_flag("--exact", p.exact, "Scan every vector even when the memory has an approximate index");
}

namespace {

void print_index_info(const Memory& m, bool json) {
  auto i = m.index_info(/*load=*/true);
  if (json) {
    nlohmann::json j;
    if (!i) {
      j = {{"factory", "Flat"}, {"kind", "exact"}};
    } else {
      j = {{"factory", i->factory},     {"kind", i->kind},           {"built", i->built},
           {"file", i->file},           {"train_min", i->train_min}, {"fold_rows", i->fold_rows},
           {"indexed_rows", i->indexed_rows}, {"tail_rows", i->tail_rows}, {"entries", i->entries},
           {"holes", i->holes},         {"nlist", i->nlist},         {"file_bytes", i->file_bytes},
           {"bytes_per_item", i->bytes_per_item}, {"lossy", i->lossy}, {"nprobe", i->nprobe},
           {"ef", i->ef},               {"k_factor", i->k_factor},   {"note", i->note}};
    }
    std::cout << json_text(j, 2) << "\n";
    return;
  }
  if (!i) {
    std::cout << "index       Flat (exact search of every vector; `vismem index set " << m.path()
              << " FACTORY` adds an approximate index)\n";
    return;
  }
  std::cout << "index       " << i->factory << " (" << i->kind << (i->lossy ? ", compressed codes" : "") << ")\n";
  if (!i->note.empty()) std::cout << "note        " << i->note << "\n";
  if (!i->built) {
    std::cout << "state       not built: searches are exact until the memory holds " << std::max(i->train_min, i->fold_rows)
              << " rows (it holds " << m.size() << " items)"
              << (m.size() >= i->train_min ? "; `vismem index rebuild` builds it now"
                                           : "; training needs " + std::to_string(i->train_min) + " items")
              << "\n";
    return;
  }
  std::cout << "file        " << i->file << " (" << i->file_bytes / 1e6 << " MB, " << i->bytes_per_item
            << " bytes per item)\n"
            << "entries     " << i->entries << (i->holes ? " (+ " + std::to_string(i->holes) + " removed nodes cut out of the graph; rebuild drops them)" : "")
            << "\n"
            << "rows        " << i->indexed_rows << " indexed, " << i->tail_rows
            << " added since (searched exactly; folded in at " << i->fold_rows << ")\n";
  if (i->kind == "ivf") std::cout << "lists       " << i->nlist << ", nprobe " << i->nprobe << "\n";
  if (i->kind == "hnsw") std::cout << "efSearch    " << i->ef << "\n";
  std::cout << "k-factor    " << i->k_factor << " candidates per neighbor, re-scored exactly\n";
}

}  // namespace

void add_index_commands(CLI::App& app) {
  auto* g = app.add_subcommand("index", "The approximate index (FAISS): info, set, rebuild, tune");
  g->require_subcommand(1);
  {
    auto* c = g->add_subcommand("info", "Kind, size, training state and search defaults of the index");
    auto mem = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    c->add_option("memory", *mem, "Memory file")->required();
    c->add_flag("--json", *json, "JSON output");
    c->callback([=] { print_index_info(open_memory(*mem), *json); });
  }
  {
    auto* c = g->add_subcommand("set", "Give the memory an approximate index (a FAISS index-factory string; Flat: none) and build it");
    auto mem = std::make_shared<std::string>();
    auto factory = std::make_shared<std::string>();
    c->add_option("memory", *mem, "Memory file")->required();
    c->add_option("factory", *factory, "e.g. IVF1024,PQ64  IVF4096,SQ8  HNSW32  (Flat: exact search only)")->required();
    c->callback([=] {
      Memory m = open_memory(*mem);
      const bool built = m.set_index(*factory);
      auto i = m.index_info();
      if (!i) std::cout << *mem << ": exact search only (index removed)\n";
      else if (built) std::cout << *mem << ": index " << i->factory << " built over " << m.size() << " items\n";
      else
        std::cout << *mem << ": index " << i->factory << " set; it is built once the memory holds "
                  << std::max(i->train_min, i->fold_rows) << " items (searches are exact until then)\n";
    });
  }
  for (const char* name : {"rebuild", "train"}) {
    auto* c = g->add_subcommand(name, std::string(name) == "train"
                                          ? "Train and build the index now, on a sample of the memory's items"
                                          : "Build the index again from scratch (new training; drops holes)");
    auto mem = std::make_shared<std::string>();
    c->add_option("memory", *mem, "Memory file")->required();
    c->callback([=] {
      Memory m = open_memory(*mem);
      m.rebuild_index();
      print_index_info(m, false);
    });
  }
  {
    auto* c = g->add_subcommand("tune", "Recall@k and speed for each nprobe (IVF) or efSearch (HNSW), on the memory's own items");
    auto mem = std::make_shared<std::string>();
    auto o = std::make_shared<TuneOptions>();
    auto set_recall = std::make_shared<double>(0);
    c->add_option("memory", *mem, "Memory file")->required();
    c->add_option("--queries", o->queries, "Items sampled as queries")->check(kPositiveInt);
    c->add_option("--k", o->k, "recall@k")->check(kPositiveInt);
    c->add_option("--singles", o->singles, "Queries also timed one at a time")->check(CLI::Range(0, 1 << 20));
    c->add_option("--values", o->values, "Values to sweep (default: powers of two)");
    c->add_option("--threads", o->threads, "Search threads (0: all cores)")->check(kThreadCount);
    c->add_option("--set-recall", *set_recall,
                  "Store as the memory's default the smallest value reaching this recall (e.g. 0.95)")
        ->check(CLI::Range(0.0, 1.0));
    c->callback([=] {
      Memory m = open_memory(*mem);
      TuneResult t = tune_index(m, *o);
      std::cout << t.table();
      if (*set_recall > 0) {
        auto v = t.smallest_with_recall(*set_recall);
        if (!v) throw Error("no swept value reaches recall " + std::to_string(*set_recall) + "; the default is unchanged");
        auto i = m.index_info();
        const bool ivf = i->kind == "ivf";
        m.set_index_defaults(ivf ? *v : 0, ivf ? 0 : *v, 0);
        std::cout << "default " << (ivf ? "nprobe" : "efSearch") << " set to " << *v << "\n";
      }
    });
  }
}

}  // namespace vismem::cli
