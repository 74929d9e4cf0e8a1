// eval, classify.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "encoder.h"
#include "error.h"
#include "eval.h"
#include "neighbors.h"
#include "pipeline.h"

namespace vismem::cli {

namespace {

// Queries for a memory: from --embeddings, or images (files or an ImageFolder).
struct Queries {
  Matrix x;
  std::vector<std::string> ids, labels;
};

Queries embed_query_images(const Memory& mem, const std::vector<std::string>& paths_or_dir, const std::string& model,
                           bool folder, int batch, int threads) {
  auto enc = memory_encoder(mem, model);
  Queries q;
  std::vector<std::string> paths;
  std::vector<std::string> ids, labels;
  if (folder) {
    for (auto& li : scan_image_folder(paths_or_dir.at(0))) {
      paths.push_back(li.path);
      ids.push_back(li.id);
      labels.push_back(li.label);
    }
    if (paths.empty()) throw Error(paths_or_dir[0] + ": no images found (expected one subfolder per class)");
  } else {
    paths = paths_or_dir;
    ids = paths;
  }
  Progress bar("embedding queries", static_cast<int64_t>(paths.size()));
  EmbedOptions eo;
  eo.batch = batch;
  eo.threads = threads;
  if (paths.size() > 8) eo.progress = [&](int64_t d, int64_t) { bar.update(d); };
  EmbedResult r = embed_images(*enc, paths, eo);
  if (paths.size() > 8) bar.finish();
  for (auto& [i, msg] : r.failed) std::cerr << "skipped " << paths[i] << ": " << msg << "\n";
  if (r.ok.empty()) throw Error("no query image could be read");
  for (int64_t i : r.ok) {
    q.ids.push_back(ids[i]);
    if (!labels.empty()) q.labels.push_back(labels[i]);
  }
  q.x.rows = static_cast<int64_t>(r.ok.size());
  q.x.cols = enc->dim();
  q.x.data = std::move(r.embeddings);
  return q;
}

Queries load_queries(const Memory& mem, const std::string& emb, const std::string& ids_file,
                     const std::string& labels_file) {
  Queries q;
  q.x = read_embeddings(emb);
  if (q.x.cols != mem.dim())
    throw Error(emb + ": embeddings have " + std::to_string(q.x.cols) + " columns, the memory's dimension is " +
                std::to_string(mem.dim()));
  if (!ids_file.empty()) q.ids = read_list(ids_file, q.x.rows, "ids");
  if (!labels_file.empty()) q.labels = read_list(labels_file, q.x.rows, "labels");
  return q;
}

}  // namespace

void add_eval_commands(CLI::App& app) {
  // eval
  {
    auto* c = app.add_subcommand("eval", "Accuracy@k of the four voting rules (from a neighbor file, or a memory + labeled queries)");
    struct A {
      std::string mem, query_dir, neighbors, emb, labels, ids, exclude, reliability, model, out_neighbors, pruning = "memory";
      bool json = false, normalize = false, exclude_self = false;
      int k = 0, threads = 0, batch = 32;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file (instead of --neighbors)");
    c->add_option("queries", a->query_dir, "Query image folder DIR/CLASS/IMAGE (with a memory bound to a model)");
    c->add_option("--neighbors", a->neighbors, "Neighbor file (JSON, SPEC section 7)");
    c->add_option("--embeddings", a->emb, "Query embeddings .npy (with a memory)");
    c->add_option("--labels", a->labels, "Query labels, one per line (with --embeddings)");
    c->add_option("--ids", a->ids, "Query ids, one per line (with --embeddings)");
    c->add_flag("--exclude-self", a->exclude_self, "Leave-one-out: queries that are memory items skip themselves (needs --ids)");
    c->add_flag("--json", a->json, "JSON output: {queries, methods: {rule: {accuracy_at_k, best, best_k}}}");
    c->add_option("--exclude", a->exclude, "Memory ids to exclude (hard pruning), one per line");
    c->add_option("--reliability", a->reliability, "Soft pruning weights: id<TAB>weight (ids not listed weigh 1)");
    c->add_flag("--normalize-distances", a->normalize, "Min-max normalize all distances to [0,1] first");
    c->add_option("--k", a->k, "Largest k (default: 100 for a memory, the lists' length for a file)");
    c->add_option("--pruning", a->pruning, "With a memory: 'memory' applies its pruning mode (vismem prune), 'none' ignores it")
        ->check(CLI::IsMember({"memory", "none"}));
    c->add_option("--out-neighbors", a->out_neighbors, "Also write the neighbor lists (with a memory)");
    c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
    c->add_option("--threads", a->threads, "Threads (default: all cores)");
    c->add_option("--batch", a->batch, "Images per encoder batch");
    c->callback([a] {
      EvalOptions opt;
      if (!a->exclude.empty()) opt.exclude_ids = read_id_set(a->exclude);
      if (!a->reliability.empty()) opt.reliability = read_reliability_tsv(a->reliability);
      opt.normalize_distances = a->normalize;
      if (a->k < 0) throw Error("--k must be positive");
      opt.k = a->k;
      std::vector<QueryNeighbors> qs;
      if (!a->neighbors.empty()) {
        if (!a->mem.empty()) throw Error("give either --neighbors FILE or a memory, not both");
        qs = read_neighbor_file(a->neighbors);
      } else {
        if (a->mem.empty()) throw Error("eval needs --neighbors FILE, or a memory with --embeddings/--labels or a query folder");
        Memory mem = Memory::open(a->mem);
        Queries q;
        if (!a->query_dir.empty()) q = embed_query_images(mem, {a->query_dir}, a->model, true, a->batch, a->threads);
        else if (!a->emb.empty()) q = load_queries(mem, a->emb, a->ids, a->labels);
        else throw Error("eval with a memory needs --embeddings Q.npy --labels L.txt, or a query image folder");
        if (q.labels.empty()) throw Error("eval needs the queries' true labels (--labels)");
        if (a->exclude_self && q.ids.empty()) throw Error("--exclude-self needs --ids");
        int k = a->k ? a->k : 100;
        auto res = mem.search(q.x.data.data(), q.x.rows, k, a->exclude_self ? q.ids : std::vector<std::string>{}, a->threads);
        qs = to_query_neighbors(res, q.ids, q.labels, mem.info().model_id);
        opt.k = static_cast<int>(std::min<int64_t>(k, mem.size()));
        if (a->pruning == "memory") apply_memory_pruning(mem, opt);
        if (!a->out_neighbors.empty()) write_neighbor_file(a->out_neighbors, qs);
      }
      EvalResult r = evaluate(qs, opt);
      if (a->json) std::cout << eval_json(r).dump() << "\n";
      else std::cout << eval_table(r);
    });
  }
  // classify
  {
    auto* c = app.add_subcommand("classify", "Predict labels for queries, with the neighbors that decided");
    struct A {
      std::string mem, emb, ids, model, vote = "rank";
      std::vector<std::string> images;
      int k = 20, threads = 0, batch = 32, show = 10;
      bool json = false;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("images", a->images, "Image files (with a memory bound to a model)");
    c->add_option("--embeddings", a->emb, "Query embeddings .npy instead of images");
    c->add_option("--ids", a->ids, "Query ids, one per line (with --embeddings)");
    c->add_option("--k", a->k, "Neighbors that vote")->check(CLI::PositiveNumber);
    c->add_option("--vote", a->vote, "plurality, distance, softmax or rank")
        ->check(CLI::IsMember({"plurality", "distance", "softmax", "rank"}));
    c->add_flag("--json", a->json, "JSON output (every neighbor with its weight)");
    c->add_option("--show", a->show, "Neighbors to print per query (text output)");
    c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
    c->add_option("--threads", a->threads, "Threads (default: all cores)");
    c->add_option("--batch", a->batch, "Images per encoder batch");
    c->callback([a] {
      Memory mem = Memory::open(a->mem);
      if (mem.size() == 0) throw Error(a->mem + " is empty: add items first");
      Queries q;
      if (!a->emb.empty()) q = load_queries(mem, a->emb, a->ids, "");
      else if (!a->images.empty()) q = embed_query_images(mem, a->images, a->model, false, a->batch, a->threads);
      else throw Error("classify needs image files or --embeddings Q.npy");
      Vote vote = parse_vote(a->vote);
      auto res = mem.search(q.x.data.data(), q.x.rows, a->k, {}, a->threads);
      const bool prune = mem.info().pruning_mode != "none";  // read once, not per query
      nlohmann::json out = nlohmann::json::array();
      for (int64_t i = 0; i < q.x.rows; ++i) {
        const auto& nn = res[i];
        VoteInput in;
        std::vector<std::string> names;
        std::unordered_map<std::string, int32_t> idx;
        for (const Neighbor& n : nn) {
          auto [it, added] = idx.emplace(n.label, static_cast<int32_t>(names.size()));
          if (added) names.push_back(n.label);
          in.labels.push_back(it->second);
          in.distances.push_back(n.distance);
          if (prune) {
            ItemInfo item = *mem.item(n.id);
            in.excluded.push_back(mem.excluded(item));
            in.reliability.push_back(mem.weight(item));
          }
        }
        VoteBreakdown b = vote_breakdown(vote, in, static_cast<int>(nn.size()));
        auto scores = b.scores;
        std::stable_sort(scores.begin(), scores.end(), [](auto& x, auto& y) { return x.second > y.second; });
        double total = 0;
        for (auto& s : scores) total += s.second;
        std::string qid = q.ids.empty() ? "q" + std::to_string(i) : q.ids[i];
        nlohmann::json j = {{"query", qid}, {"prediction", names[b.prediction]}, {"vote", a->vote}, {"k", nn.size()}};
        nlohmann::json js = nlohmann::json::array();
        for (auto& [l, s] : scores) js.push_back({{"label", names[l]}, {"score", s}, {"share", total > 0 ? s / total : 0}});
        j["scores"] = js;
        nlohmann::json jn = nlohmann::json::array();
        for (size_t r = 0; r < nn.size(); ++r)
          jn.push_back({{"rank", r + 1}, {"id", nn[r].id}, {"label", nn[r].label}, {"distance", nn[r].distance},
                        {"weight", b.neighbor_weights[r]}});
        j["neighbors"] = jn;
        if (a->json) {
          out.push_back(std::move(j));
          continue;
        }
        std::printf("%s\n  prediction: %s  (%s vote over k=%zu, share %.2f)\n", qid.c_str(), names[b.prediction].c_str(),
                    a->vote.c_str(), nn.size(), total > 0 ? scores[0].second / total : 0.0);
        std::printf("  scores:");
        for (size_t s = 0; s < std::min<size_t>(scores.size(), 5); ++s)
          std::printf(" %s=%.4g", names[scores[s].first].c_str(), scores[s].second);
        std::printf("\n  nearest:\n");
        for (size_t r = 0; r < std::min<size_t>(nn.size(), static_cast<size_t>(a->show)); ++r)
          std::printf("    %3zu  d=%.4f  w=%.4g  %-20s %s\n", r + 1, nn[r].distance, b.neighbor_weights[r],
                      nn[r].label.c_str(), nn[r].id.c_str());
      }
      if (a->json) std::cout << (out.size() == 1 ? out[0] : out).dump(2) << "\n";
    });
  }
}

}  // namespace vismem::cli
