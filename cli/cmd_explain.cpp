// explain: one decision as a self-contained HTML page, or a text summary.
// This file only gathers the data (embed, search, vote, find the neighbors'
// images, ask the re-ranker); explain.h builds the page.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common.h"
#include "textio.h"
#include "decision.h"
#include "error.h"
#include "explain.h"
#include "image.h"
#include "pipeline.h"
#include "rerank.h"

namespace vismem::cli {

namespace {

constexpr int kThumbSide = 128;
// The query and its nearest neighbor are both unit vectors normalized by
// slightly different code paths: the same image differs by ~1e-6, a different
// one by far more than 1e-4.
constexpr double kZeroResidual = 1e-4;

// --image-root folders first (the user's override), then the roots the memory recorded.
std::string locate_image(const Memory& mem, const std::vector<std::string>& roots, const std::string& id) {
  for (const std::string& r : roots) {
    std::filesystem::path p = std::filesystem::path(r) / id;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return mem.find_image(id).value_or("");
}

// A neighbor whose file is gone or unreadable is still explained, with a placeholder.
std::vector<uint8_t> thumbnail_or_empty(const std::string& path) {
  if (path.empty()) return {};
  try {
    return thumbnail_jpeg(decode_image_file(path), kThumbSide);
  } catch (const Error& e) {
    std::cerr << "warning: " << e.what() << " (shown as a placeholder)\n";
    return {};
  }
}

std::vector<ExplainNeighbor> shown_neighbors(const std::vector<Neighbor>& nn, const NeighborVotes& nv, const Decision& d,
                                             const std::vector<std::string>& paths, int show) {
  std::vector<ExplainNeighbor> out;
  for (size_t r = 0; r < nn.size() && r < static_cast<size_t>(show); ++r) {
    ExplainNeighbor n;
    n.rank = static_cast<int>(r) + 1;
    n.id = nn[r].id;
    n.label = nn[r].label;
    n.distance = nn[r].distance;
    n.weight = r < d.neighbor_weights.size() ? d.neighbor_weights[r] : 0.0;
    // With every neighbor excluded the vote falls back to all of them (SPEC
    // section 3): then none is shown as excluded.
    n.excluded = !nv.excluded.empty() && nv.excluded[r] && n.weight == 0;
    n.thumbnail = thumbnail_or_empty(paths[r]);
    out.push_back(std::move(n));
  }
  return out;
}

std::vector<std::string> neighbor_paths(const Memory& mem, const std::vector<std::string>& roots,
                                        const std::vector<Neighbor>& nn) {
  std::vector<std::string> paths;
  for (const Neighbor& n : nn) paths.push_back(locate_image(mem, roots, n.id));
  return paths;
}

}  // namespace

void add_explain_commands(CLI::App& app) {
  auto* c = app.add_subcommand("explain", "Explain one image's decision: neighbors, votes, confidence, residual (HTML or text)");
  struct A {
    std::string mem, image, model, vote = "rank", html, rerank_cmd, label_names;
    std::vector<std::string> image_roots;
    int k = 20, show = 10, threads = 0, rerank_timeout = 60;
  };
  auto a = std::make_shared<A>();
  c->add_option("memory", a->mem, "Memory file (bound to a model)")->required();
  c->add_option("image", a->image, "Query image file")->required();
  c->add_option("--k", a->k, "Neighbors that vote")->check(kPositiveInt);
  c->add_option("--vote", a->vote, "plurality, distance, softmax or rank")
      ->check(CLI::IsMember({"plurality", "distance", "softmax", "rank"}));
  c->add_option("--show", a->show, "Neighbors shown (and residual neighbors)")->check(kPositiveInt);
  c->add_option("--model", a->model, "Encoder override (must match the memory's fingerprint)");
  c->add_option("--image-root", a->image_roots,
                "Folder where neighbor ids are looked up as files (repeatable; before the folders `vismem add` recorded)");
  c->add_option("--label-names", a->label_names, "LABEL<TAB>NAME file (e.g. a dataset's classes.tsv): names shown beside labels");
  c->add_option("--html", a->html, "Write a self-contained HTML page here (images inlined)");
  c->add_option("--rerank-cmd", a->rerank_cmd,
                "Re-ranker: a shell command that reads the query + neighbors as JSON on stdin and prints a label");
  c->add_option("--rerank-timeout", a->rerank_timeout, "Seconds the re-ranker may take")->check(kPositiveInt);
  c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
  c->callback([a] {
    Memory mem = open_memory(a->mem);
    require_items(mem);
    auto enc = memory_encoder(mem, a->model);
    Image query = decode_image_file(a->image);
    EmbedOptions eo;
    eo.threads = a->threads;
    EmbedResult er = embed_images(*enc, {a->image}, eo);
    if (er.ok.empty()) throw Error(er.failed.empty() ? a->image + ": could not be embedded" : er.failed[0].second);
    const std::vector<float>& q = er.embeddings;

    const Vote vote = parse_vote(a->vote);
    std::vector<Neighbor> nn = mem.search(q.data(), 1, search_k(mem, a->k), {}, a->threads).at(0);
    const int k = static_cast<int>(nn.size());
    NeighborVotes nv = neighbor_votes(mem, nn, true);
    Decision d = decide(vote, nv, k);
    const std::vector<std::string> paths = neighbor_paths(mem, a->image_roots, nn);

    Explanation e;
    MemoryInfo info = mem.info();
    e.query_id = a->image;
    if (!a->label_names.empty()) e.label_names = read_label_names(a->label_names);
    e.query_thumbnail = thumbnail_jpeg(query, 2 * kThumbSide);
    e.memory = a->mem;
    e.model_id = info.model_id;
    e.memory_items = info.items;
    e.vote = a->vote;
    e.k = k;
    e.ood_score = ood_score(nv.distances, k);
    e.neighbors = shown_neighbors(nn, nv, d, paths, a->show);

    // Compositionality (SPEC section 5): what is left of the query after
    // taking away its nearest neighbor.
    ExplainResidual res;
    res.subtracted_id = nn[0].id;
    std::vector<float> nearest = mem.embedding(nn[0].id);
    std::vector<float> rq(q.size());
    double ss = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      rq[i] = q[i] - nearest[i];
      ss += double(rq[i]) * rq[i];
    }
    res.norm = std::sqrt(ss);
    res.zero = res.norm < kZeroResidual;
    if (!res.zero) {
      for (float& v : rq) v = static_cast<float>(v / res.norm);
      std::vector<Neighbor> rnn = mem.search(rq.data(), 1, search_k(mem, a->k), {}, a->threads).at(0);
      NeighborVotes rnv = neighbor_votes(mem, rnn, true);
      res.decision = decide(vote, rnv, static_cast<int>(rnn.size()));
      res.neighbors = shown_neighbors(rnn, rnv, res.decision, neighbor_paths(mem, a->image_roots, rnn), a->show);
    }
    e.residual = std::move(res);
    e.decision = std::move(d);

    if (!a->rerank_cmd.empty()) {
      nlohmann::json req = rerank_request(a->image, a->image, a->vote, k, e.decision.prediction, nn, paths, e.decision);
      e.rerank = run_rerank(a->rerank_cmd, req, a->rerank_timeout);
      e.rerank_command = a->rerank_cmd;
    }

    if (a->html.empty()) {
      std::cout << explain_text(e);
      return;
    }
    const std::string page = explain_html(e);
    {
      std::ofstream f(a->html, std::ios::binary | std::ios::trunc);
      if (!f) throw Error(a->html + ": cannot open for writing");
      f.write(page.data(), static_cast<std::streamsize>(page.size()));
      f.close();
      if (!f) throw Error(a->html + ": write failed");
    }
    std::cout << a->image << ": " << e.decision.prediction;
    if (e.rerank) std::cout << " (re-ranker: " << e.rerank->label << ")";
    std::cout << "\nwrote " << a->html << "\n";
  });
}

}  // namespace vismem::cli
