// explain.h: one decision as a self-contained HTML page (or a text summary):
// the query, the neighbors that voted with their weights, the class totals,
// the confidence signals, the compositionality residual's neighbors (SPEC
// section 5) and a re-ranker's answer.
//
// Basic usage:
//   vismem::Explanation e;                       // filled by the caller (vismem explain gathers it)
//   e.query_id = "photo.jpg";  e.query_thumbnail = vismem::thumbnail_jpeg(img, 128);
//   e.vote = "rank";  e.k = 20;  e.decision = vismem::decide(vismem::Vote::rank, nv, 20);
//   e.neighbors.push_back({.rank = 1, .id = "cat/1.jpg", .label = "cat", .distance = 0.1, .weight = 0.5});
//   std::string html = vismem::explain_html(e);  // images inlined as data: URIs, no external file
//
// explain_html / explain_text are pure functions of the struct (no model, no
// memory), so pages can be built and tested from hand-made data.
// Thread safety: pure functions over values; safe to call from many threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "decision.h"
#include "image.h"
#include "rerank.h"

namespace vismem {

struct ExplainNeighbor {
  int rank = 0;  // 1-based, ascending distance
  std::string id;
  std::string label;
  double distance = 0;
  double weight = 0;               // vote weight (0 for an excluded neighbor)
  bool excluded = false;           // hard-pruned: did not vote
  std::vector<uint8_t> thumbnail;  // encoded JPEG/PNG/WebP/BMP; empty = image not found (a placeholder is drawn)
};

struct ExplainResidual {
  std::string subtracted_id;  // the nearest neighbor whose embedding was subtracted from the query's
  double norm = 0;            // |q - e| before normalization
  bool zero = false;          // q == e up to rounding: nothing was searched
  std::vector<ExplainNeighbor> neighbors;  // the residual's nearest items (the ones shown)
  Decision decision;                       // the residual's own vote: the query's "second concept"
};

struct Explanation {
  std::string query_id;                   // as the user named it
  std::vector<uint8_t> query_thumbnail;   // encoded image, or empty
  std::string memory;                     // memory file, for the header
  std::string model_id;
  int64_t memory_items = 0;
  std::string vote;                       // rule name
  int k = 0;                              // neighbors that voted
  Decision decision;
  double ood_score = 0;                   // median distance to the k neighbors
  std::vector<ExplainNeighbor> neighbors; // the ones shown, ascending distance
  std::optional<ExplainResidual> residual;
  std::optional<RerankAnswer> rerank;
  std::string rerank_command;
  // Optional readable names for labels (e.g. wnid -> "tench"), shown beside them.
  std::unordered_map<std::string, std::string> label_names;
};

// Gathers one query's explanation from a memory (everything but the query's
// own id/thumbnail, label names and the re-ranker, which the caller adds):
// search, vote (pruning applied), the shown neighbors with thumbnails (found
// under image_roots first, then the folders the memory recorded; a missing or
// unreadable file leaves the thumbnail empty and a line in warnings), and the
// compositionality residual. q: mem.dim() floats, L2-normalized.
// `vismem explain` and the HTTP service's /v1/explain both use it.
struct ExplainOptions {
  Vote vote = Vote::rank;
  std::string vote_name = "rank";
  int k = 20;
  int show = 10;
  int threads = 0;
  int thumb_side = 128;
  std::vector<std::string> image_roots;
};
Explanation explain_query(const Memory& mem, const float* q, const ExplainOptions& o,
                          std::vector<std::string>* warnings = nullptr);

// A neighbor's image file: roots first, then the memory's recorded folders;
// only a file inside one of them ("" if none: an id with ".." cannot leave them).
std::string find_neighbor_image(const Memory& mem, const std::vector<std::string>& roots, const std::string& id);

// The explanation as JSON (`vismem explain --json`, POST /v1/explain): query,
// memory, model_id, items, vote, k, prediction, score_share, vote_share,
// entropy, ood_score, scores [{label, score}], neighbors [{rank, id, label,
// distance, weight, excluded, thumbnail}], residual {subtracted_id, norm,
// zero, prediction, score_share, neighbors}, rerank {label, confidence,
// reason}. A thumbnail is a data: URI or null. Ids and labels may be any
// bytes: dump with error_handler_t::replace (bad UTF-8 becomes U+FFFD).
nlohmann::json explanation_json(const Explanation& e);

std::string explain_html(const Explanation& e);
// A few lines for the terminal: prediction, top scores, neighbors, residual, re-ranker.
std::string explain_text(const Explanation& e);

// & < > " ' as character references: safe in element text and quoted attributes.
std::string html_escape(const std::string& s);

// RFC 4648 base64 with padding; decode ignores ASCII whitespace and throws
// vismem::Error on any other character outside the alphabet or bad padding.
std::string base64_encode(const uint8_t* data, size_t size);
inline std::string base64_encode(const std::vector<uint8_t>& v) { return base64_encode(v.data(), v.size()); }
std::vector<uint8_t> base64_decode(const std::string& text);

// The image shrunk (Pillow bicubic) so its longer side is at most max_side,
// aspect kept; a smaller image is kept as it is. Then JPEG-encoded.
Image thumbnail(const Image& img, int max_side);
std::vector<uint8_t> thumbnail_jpeg(const Image& img, int max_side, int quality = 85);

}  // namespace vismem
