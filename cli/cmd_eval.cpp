// eval, classify.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "encoder.h"
#include "error.h"
#include "json_text.h"
#include "eval.h"
#include "neighbors.h"
#include "pipeline.h"
#include "decision.h"
#include "rerank.h"
#include "taxonomy.h"
#include "textio.h"
#include "calibration.h"
#include <optional>
#include <unordered_set>

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
    std::vector<std::string> skipped;
    for (auto& li : scan_image_folder(paths_or_dir.at(0), &skipped)) {
      paths.push_back(li.path);
      ids.push_back(li.id);
      labels.push_back(li.label);
    }
    for (auto& s : skipped) std::cerr << "skipped " << s << "\n";
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
  for (auto& [i, msg] : r.failed) std::cerr << "skipped " << msg << "\n";
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
    add_search_options(c);
    struct A {
      std::string mem, query_dir, neighbors, emb, labels, ids, exclude, reliability, model, out_neighbors, pruning = "memory",
          taxonomy, levels;
      bool json = false, normalize = false, exclude_self = false, abstain = false;
      int k = 0, threads = 0, batch = 32;
      double ood_threshold = -1;
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
    c->add_option("--k", a->k, "Largest k (default: 100 for a memory, the lists' length for a file)")->check(kPositiveInt);
    c->add_option("--pruning", a->pruning, "With a memory: 'memory' applies its pruning mode (vismem prune), 'none' ignores it")
        ->check(CLI::IsMember({"memory", "none"}));
    c->add_option("--out-neighbors", a->out_neighbors, "Also write the neighbor lists (with a memory)");
    c->add_flag("--abstain", a->abstain,
                "With a memory: also report coverage and accuracy on the queries kept by the OOD threshold (vismem ood-fit)");
    c->add_option("--ood-threshold", a->ood_threshold, "OOD threshold for --abstain (default: the stored one)");
    c->add_option("--taxonomy", a->taxonomy, "Taxonomy file (LEAF<TAB>ROOT > ... > LEAF): accuracy per level too");
    c->add_option("--levels", a->levels, "Taxonomy depths, e.g. 4,6,8 (default: every depth)");
    c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
    c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
    c->add_option("--batch", a->batch, "Images per encoder batch")->check(kBatchSize);
    c->callback([a] {
      EvalOptions opt;
      if (!a->exclude.empty()) opt.exclude_ids = read_id_set(a->exclude);
      if (!a->reliability.empty()) opt.reliability = read_reliability_tsv(a->reliability);
      opt.normalize_distances = a->normalize;
      if (a->k < 0) throw Error("--k must be positive");
      opt.k = a->k;
      if (a->abstain && !a->taxonomy.empty()) throw Error("--abstain and --taxonomy: run them separately");
      std::vector<QueryNeighbors> qs;
      int ood_k = 0;
      double ood_threshold = -1;
      if (!a->neighbors.empty()) {
        if (!a->mem.empty()) throw Error("give either --neighbors FILE or a memory, not both");
        if (a->abstain) throw Error("--abstain needs a memory (its OOD threshold)");
        qs = read_neighbor_file(a->neighbors);
        std::unordered_set<std::string> seen;
        for (const auto& qn : qs) seen.insert(qn.neighbor_labels.begin(), qn.neighbor_labels.end());
        if (std::string w = unknown_label_warning(qs, seen, "the neighbor lists"); !w.empty()) std::cerr << w << "\n";
      } else {
        if (a->mem.empty()) throw Error("eval needs --neighbors FILE, or a memory with --embeddings/--labels or a query folder");
        Memory mem = open_memory(a->mem);
        require_items(mem);
        if (a->exclude_self && mem.size() < 2) throw Error("--exclude-self needs a memory of at least 2 items");
        Queries q;
        if (!a->query_dir.empty()) q = embed_query_images(mem, {a->query_dir}, a->model, true, a->batch, a->threads);
        else if (!a->emb.empty()) q = load_queries(mem, a->emb, a->ids, a->labels);
        else throw Error("eval with a memory needs --embeddings Q.npy --labels L.txt, or a query image folder");
        if (q.labels.empty()) throw Error("eval needs the queries' true labels (--labels)");
        if (a->exclude_self && q.ids.empty()) throw Error("--exclude-self needs --ids");
        int k = a->k ? a->k : 100;
        // Leave-one-out lists hold one neighbor fewer than the memory has items.
        const int64_t avail = mem.size() - (a->exclude_self ? 1 : 0);
        if (k > avail)
          std::cerr << "note: k=" << k << (a->k ? "" : " (default)") << " but " << a->mem << " has " << mem.size()
                    << " items" << (a->exclude_self ? " (one left out per query)" : "") << ": using k=" << avail << "\n";
        // --abstain needs the OOD score's neighbors too: search the larger of the two.
        const MemoryInfo info = mem.info();
        if (a->abstain) {
          if (a->ood_threshold < 0 && info.ood_k == 0)
            throw Error("--abstain needs a threshold: run `vismem ood-fit` or give --ood-threshold");
          ood_k = info.ood_k ? info.ood_k : 100;
          ood_threshold = a->ood_threshold >= 0 ? a->ood_threshold : info.ood_threshold;
        }
        auto res = mem.search(q.x.data.data(), q.x.rows, search_k(mem, std::max(k, ood_k)),
                              a->exclude_self ? q.ids : std::vector<std::string>{}, a->threads);
        qs = to_query_neighbors(res, q.ids, q.labels, info.model_id);
        opt.k = static_cast<int>(std::min<int64_t>(k, avail));
        ood_k = static_cast<int>(std::min<int64_t>(ood_k, avail));
        const auto labels = mem.labels();
        if (std::string w = unknown_label_warning(qs, {labels.begin(), labels.end()}, "the memory"); !w.empty())
          std::cerr << w << "\n";
        if (a->pruning == "memory") apply_memory_pruning(mem, opt);
        if (!a->out_neighbors.empty()) write_neighbor_file(a->out_neighbors, qs);
      }
      EvalResult r = evaluate(qs, opt);
      if (a->abstain) {
        std::vector<QueryNeighbors> kept;
        for (auto& qn : qs)
          if (ood_score(qn.distances, ood_k) <= ood_threshold) kept.push_back(qn);
        double coverage = qs.empty() ? 0 : 100.0 * static_cast<double>(kept.size()) / static_cast<double>(qs.size());
        nlohmann::ordered_json j = eval_json(r);
        nlohmann::ordered_json ja = {{"threshold", ood_threshold}, {"ood_k", ood_k}, {"kept", kept.size()},
                                     {"coverage", coverage}};
        if (!kept.empty()) ja["kept_methods"] = eval_json(evaluate(kept, opt))["methods"];
        if (a->json) {
          j["abstain"] = ja;
          std::cout << json_text(j) << "\n";
        } else {
          std::cout << eval_table(r) << "\nabstaining above OOD score " << ood_threshold << " (median distance to "
                    << ood_k << "): kept " << kept.size() << " of " << qs.size() << " queries (" << coverage << "%)\n";
          if (!kept.empty()) std::cout << eval_table(evaluate(kept, opt));
        }
        return;
      }
      if (a->taxonomy.empty()) {
        if (!a->levels.empty()) throw Error("--levels needs --taxonomy FILE");
        if (a->json) std::cout << json_text(eval_json(r)) << "\n";
        else std::cout << eval_table(r);
        return;
      }
      Taxonomy tax = Taxonomy::read(a->taxonomy);
      std::vector<int> depths;
      if (!a->levels.empty()) depths = parse_levels(a->levels);
      else
        for (int d = 1; d < tax.max_depth(); ++d) depths.push_back(d);
      nlohmann::ordered_json j = eval_json(r);
      nlohmann::ordered_json lv = nlohmann::ordered_json::object();
      for (int d : depths) {
        EvalResult rd = evaluate(relabel(qs, tax, d), opt);
        if (a->json) lv["depth " + std::to_string(d)] = eval_json(rd);
        else std::cout << "== depth " << d << "\n" << eval_table(rd) << "\n";
      }
      if (a->json) {
        j["levels"] = lv;
        std::cout << json_text(j) << "\n";
      } else {
        std::cout << "== leaf\n" << eval_table(r);
      }
    });
  }
  // ood-fit
  {
    auto* c = app.add_subcommand("ood-fit", "Fit the OOD threshold on in-distribution queries to a target false-positive rate");
    struct A {
      std::string mem, query_dir, emb, model;
      bool self = false, json = false;
      int k = 100, threads = 0, batch = 32;
      double fpr = 0.05;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("queries", a->query_dir, "In-distribution query images (a folder, e.g. a validation split)");
    c->add_option("--embeddings", a->emb, "In-distribution query embeddings .npy instead");
    c->add_flag("--self", a->self, "Use the memory's own items, each leaving itself out");
    c->add_option("--fpr", a->fpr, "Share of in-distribution queries allowed above the threshold")->check(CLI::Range(0.0, 0.999));
    c->add_option("--k", a->k, "Neighbors for the OOD score (median distance)")->check(kPositiveInt);
    c->add_flag("--json", a->json, "JSON output");
    c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
    c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
    c->add_option("--batch", a->batch, "Images per encoder batch")->check(kBatchSize);
    c->callback([a] {
      Memory mem = open_memory(a->mem);
      require_items(mem);
      if (static_cast<int>(!a->query_dir.empty()) + !a->emb.empty() + a->self != 1)
        throw Error("ood-fit needs exactly one of: a query folder, --embeddings Q.npy, --self");
      int k = static_cast<int>(std::min<int64_t>(a->k, mem.size() - (a->self ? 1 : 0)));
      if (k < 1) throw Error("ood-fit --self needs a memory of at least 2 items (each leaves itself out)");
      Queries q;
      std::vector<std::string> self_ids;
      if (a->self) {
        for (auto& it : mem.items()) {
          auto e = mem.embedding(it.id);
          q.x.data.insert(q.x.data.end(), e.begin(), e.end());
          self_ids.push_back(it.id);
        }
        q.x.rows = static_cast<int64_t>(self_ids.size());
        q.x.cols = mem.dim();
      } else if (!a->emb.empty()) {
        q = load_queries(mem, a->emb, "", "");
      } else {
        q = embed_query_images(mem, {a->query_dir}, a->model, true, a->batch, a->threads);
      }
      auto res = mem.search(q.x.data.data(), q.x.rows, k, self_ids, a->threads);
      std::vector<double> scores;
      for (auto& nn : res) {
        std::vector<double> d;
        for (auto& n : nn) d.push_back(n.distance);
        scores.push_back(ood_score(d, k));
      }
      double t = fit_ood_threshold(scores, a->fpr);
      int64_t above = std::count_if(scores.begin(), scores.end(), [t](double s) { return s > t; });
      mem.set_ood_threshold(t, k, a->fpr);
      if (a->json) {
        std::cout << json_text(nlohmann::json{{"threshold", t}, {"k", k}, {"fpr_target", a->fpr}, {"queries", scores.size()},
                                    {"fpr_measured", static_cast<double>(above) / scores.size()}}) << "\n";
      } else {
        std::printf("OOD threshold %.6f (median distance to %d neighbors), from %zu in-distribution queries:\n"
                    "%lld of them (%.2f%%) score above it (target %.2f%%). Stored in %s; classify --abstain uses it.\n",
                    t, k, scores.size(), static_cast<long long>(above), 100.0 * above / scores.size(), 100 * a->fpr,
                    a->mem.c_str());
      }
    });
  }
  // classify
  {
    auto* c = app.add_subcommand("classify", "Predict labels for queries, with the neighbors that decided");
    add_search_options(c);
    struct A {
      std::string mem, emb, ids, model, vote = "rank", taxonomy, levels, rerank_cmd, label_names;
      std::vector<std::string> images;
      int k = 20, threads = 0, batch = 32, show = 10, ood_k = 0, rerank_timeout = 60;
      double confident = 0, ood_threshold = -1;
      bool json = false, abstain = false;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("images", a->images, "Image files (with a memory bound to a model)");
    c->add_option("--embeddings", a->emb, "Query embeddings .npy instead of images");
    c->add_option("--ids", a->ids, "Query ids, one per line (with --embeddings)");
    c->add_option("--k", a->k, "Neighbors that vote")->check(kPositiveInt);
    c->add_option("--vote", a->vote, "plurality, distance, softmax or rank")
        ->check(CLI::IsMember({"plurality", "distance", "softmax", "rank"}));
    c->add_flag("--json", a->json, "JSON output (every neighbor with its weight)");
    c->add_option("--show", a->show, "Neighbors to print per query (text output)")->check(kPositiveInt);
    c->add_option("--taxonomy", a->taxonomy, "Taxonomy file (LEAF<TAB>ROOT > ... > LEAF): a prediction per level");
    c->add_option("--levels", a->levels, "Taxonomy depths to report, e.g. 4,6,8 (default: every depth)");
    c->add_option("--confident", a->confident, "With --taxonomy: answer at the deepest level whose score share >= T")
        ->check(CLI::Range(0.0, 1.0));
    c->add_option("--ood-k", a->ood_k, "Neighbors for the OOD score (median distance; default: the fitted k, else 100)")
        ->check(kPositiveInt);
    c->add_option("--ood-threshold", a->ood_threshold, "OOD threshold (default: the one `vismem ood-fit` stored)");
    c->add_flag("--abstain", a->abstain, "Answer no label for queries whose OOD score exceeds the threshold");
    c->add_option("--label-names", a->label_names, "LABEL<TAB>NAME file (e.g. a dataset's classes.tsv): names beside labels");
    c->add_option("--rerank-cmd", a->rerank_cmd, "External re-ranker: gets the query and its k neighbors as JSON on stdin, answers a label");
    c->add_option("--rerank-timeout", a->rerank_timeout, "Seconds the re-ranker may take per query")->check(kPositiveInt);
    c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
    c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
    c->add_option("--batch", a->batch, "Images per encoder batch")->check(kBatchSize);
    c->callback([a] {
      Memory mem = open_memory(a->mem);
      require_items(mem);
      const MemoryInfo info = mem.info();
      std::optional<Taxonomy> tax;
      std::vector<int> depths;
      if (!a->taxonomy.empty()) {
        tax = Taxonomy::read(a->taxonomy);
        tax->check_covers(mem.labels(), a->mem);
        if (!a->levels.empty()) depths = parse_levels(a->levels);
        else
          for (int d = 1; d < tax->max_depth(); ++d) depths.push_back(d);
      } else if (a->confident > 0 || !a->levels.empty()) {
        throw Error("--confident and --levels need --taxonomy FILE");
      }
      double ood_threshold = a->ood_threshold;
      int ood_k = a->ood_k ? a->ood_k : info.ood_k ? info.ood_k : 100;
      if (a->abstain && ood_threshold < 0) {
        if (info.ood_k == 0) throw Error("--abstain needs a threshold: run `vismem ood-fit` or give --ood-threshold");
        if (a->ood_k && a->ood_k != info.ood_k)
          throw Error("the stored OOD threshold was fitted with k=" + std::to_string(info.ood_k) + ", not --ood-k " +
                      std::to_string(a->ood_k));
        if (info.ood_stale()) std::cerr << "warning: the OOD threshold was fitted before the memory last changed\n";
        ood_threshold = info.ood_threshold;
      }
      ood_k = static_cast<int>(std::min<int64_t>(ood_k, mem.size()));
      Queries q;
      std::vector<std::string> query_paths;
      if (!a->emb.empty()) q = load_queries(mem, a->emb, a->ids, "");
      else if (!a->images.empty()) {
        q = embed_query_images(mem, a->images, a->model, false, a->batch, a->threads);
        query_paths = q.ids;
      } else throw Error("classify needs image files or --embeddings Q.npy");
      Vote vote = parse_vote(a->vote);
      std::unordered_map<std::string, std::string> names;
      if (!a->label_names.empty()) names = read_label_names(a->label_names);
      auto named = [&](const std::string& l) {
        auto it = names.find(l);
        return it == names.end() || it->second == l ? l : l + " (" + it->second + ")";
      };
      auto res = mem.search(q.x.data.data(), q.x.rows, search_k(mem, std::max(a->k, ood_k)), {}, a->threads);
      nlohmann::json out = nlohmann::json::array();
      for (int64_t i = 0; i < q.x.rows; ++i) {
        QueryDecision qd = decide_query(mem, res[i], vote, a->k, ood_k);
        const std::vector<Neighbor>& nn = qd.neighbors;
        const NeighborVotes& nv = qd.votes;
        const Decision& d = qd.decision;
        const int k = d.k;
        const double ood = qd.ood;
        bool abstained = a->abstain && ood > ood_threshold;
        std::string qid = q.ids.empty() ? "q" + std::to_string(i) : q.ids[i];
        nlohmann::json j = decision_json(qid, a->vote, qd);
        if (abstained) j["prediction"] = nullptr;
        if (ood_threshold >= 0) {
          j["ood_threshold"] = ood_threshold;
          j["out_of_distribution"] = ood > ood_threshold;
        }
        if (a->abstain) j["abstained"] = abstained;
        if (!names.empty() && !abstained && names.count(d.prediction)) j["prediction_name"] = names.at(d.prediction);
        for (auto& js : j["scores"])
          if (names.count(js["label"].get<std::string>())) js["name"] = names.at(js["label"].get<std::string>());
        HierarchyDecision h;
        if (tax) {
          h = decide_levels(vote, nv, k, *tax, depths, a->confident);
          nlohmann::json jl = nlohmann::json::array();
          for (auto& l : h.levels)
            jl.push_back({{"level", l.level}, {"prediction", l.decision.prediction}, {"score_share", l.decision.score_share}});
          j["levels"] = jl;
          if (a->confident > 0) {
            j["confident_level"] = h.confident_level < 0 ? nlohmann::json(nullptr) : nlohmann::json(h.levels[h.confident_level].level);
            j["confident_prediction"] = h.confident_level < 0 ? nlohmann::json(nullptr)
                                                               : nlohmann::json(h.levels[h.confident_level].decision.prediction);
          }
        }
        std::string reranked;
        if (!a->rerank_cmd.empty()) {
          std::vector<std::string> paths;
          for (auto& n : nn) paths.push_back(mem.find_image(n.id).value_or(""));
          RerankAnswer ra = run_rerank(a->rerank_cmd,
                                       rerank_request(qid, query_paths.empty() ? "" : query_paths[i], a->vote, k, d.prediction, nn, paths, d),
                                       a->rerank_timeout);
          reranked = ra.label;
          j["rerank"] = {{"label", ra.label}, {"vote_prediction", d.prediction}};
          if (!abstained) j["prediction"] = ra.label;
        }
        if (a->json) {
          out.push_back(std::move(j));
          continue;
        }
        std::string shown = abstained ? "(abstain: out of distribution)" : named(!reranked.empty() ? reranked : d.prediction);
        std::printf("%s\n  prediction: %s  (%s vote over k=%d, share %.2f)\n", qid.c_str(), shown.c_str(), a->vote.c_str(),
                    k, d.score_share);
        if (!reranked.empty()) std::printf("  re-ranker answered %s; the vote said %s\n", reranked.c_str(), d.prediction.c_str());
        std::printf("  vote share %.2f, entropy %.2f, OOD score %.4f (median distance to %d)%s\n", d.vote_share, d.entropy,
                    ood, ood_k, ood_threshold >= 0 ? (ood > ood_threshold ? " > threshold" : " <= threshold") : "");
        for (size_t l = 0; tax && l < h.levels.size(); ++l)
          std::printf("  %-9s %s (share %.2f)%s\n", h.levels[l].level.c_str(), h.levels[l].decision.prediction.c_str(),
                      h.levels[l].decision.score_share, static_cast<int>(l) == h.confident_level ? "  <- confident" : "");
        std::printf("  scores:");
        for (size_t s = 0; s < std::min<size_t>(d.scores.size(), 5); ++s)
          std::printf(" %s=%.4g", named(d.scores[s].first).c_str(), d.scores[s].second);
        std::printf("\n  nearest:\n");
        for (size_t r = 0; r < std::min<size_t>(nn.size(), static_cast<size_t>(a->show)); ++r)
          std::printf("    %3zu  d=%.4f  w=%.4g  %-20s %s\n", r + 1, nn[r].distance, d.neighbor_weights[r],
                      named(nn[r].label).c_str(), nn[r].id.c_str());
      }
      if (a->json) std::cout << json_text(out.size() == 1 ? out[0] : out, 2) << "\n";
    });
  }
}

}  // namespace vismem::cli
