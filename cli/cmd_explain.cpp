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
}  // namespace

void add_explain_commands(CLI::App& app) {
  auto* c = app.add_subcommand("explain", "Explain one image's decision: neighbors, votes, confidence, residual (HTML or text)");
  add_search_options(c);
  struct A {
    std::string mem, image, model, vote = "rank", html, rerank_cmd, label_names;
    std::vector<std::string> image_roots;
    int k = 20, show = 10, threads = 0, rerank_timeout = 60;
    bool json = false;
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
  c->add_flag("--json", a->json, "Print the explanation as one JSON object (thumbnails as data: URIs; as POST /v1/explain)");
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

    ExplainOptions xo;
    xo.vote = parse_vote(a->vote);
    xo.vote_name = a->vote;
    xo.k = search_k(mem, a->k);
    xo.show = a->show;
    xo.threads = a->threads;
    xo.thumb_side = kThumbSide;
    xo.image_roots = a->image_roots;
    std::vector<std::string> warnings;
    Explanation e = explain_query(mem, q.data(), xo, &warnings);
    for (const std::string& w : warnings) std::cerr << "warning: " << w << "\n";
    e.query_id = a->image;
    if (!a->label_names.empty()) e.label_names = read_label_names(a->label_names);
    e.query_thumbnail = thumbnail_jpeg(query, 2 * kThumbSide);

    if (!a->rerank_cmd.empty()) {
      // The re-ranker sees the k neighbors that voted, with their image paths.
      std::vector<Neighbor> nn = mem.search(q.data(), 1, search_k(mem, a->k), {}, a->threads).at(0);
      std::vector<std::string> paths;
      for (const Neighbor& n : nn) paths.push_back(find_neighbor_image(mem, a->image_roots, n.id));
      nlohmann::json req = rerank_request(a->image, a->image, a->vote, e.k, e.decision.prediction, nn, paths, e.decision);
      e.rerank = run_rerank(a->rerank_cmd, req, a->rerank_timeout);
      e.rerank_command = a->rerank_cmd;
    }

    if (a->json) {
      std::cout << explanation_json(e).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
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
