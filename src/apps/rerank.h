// rerank.h: the re-ranking hook (SPEC section 5): an external program receives
// a query and its neighbors as JSON and answers a label.
//
// Basic usage:
//   nlohmann::json req = vismem::rerank_request("q.jpg", "/abs/q.jpg", "rank", 20, d.prediction, nn, paths, d);
//   vismem::RerankAnswer a = vismem::run_rerank("python3 my_vlm.py --top 50", req, 60);
//   a.label;  a.confidence;  a.reason;
//
// The protocol. The command runs as `/bin/sh -c CMD` in its own process group,
// with the request on stdin (one JSON document, then EOF):
//   {"query": {"id": "q.jpg", "image": "/abs/q.jpg" | null},
//    "vote": "rank", "k": 20, "prediction": "tench",
//    "scores": [{"label": "tench", "score": 2.1}, ...],          // descending
//    "neighbors": [{"rank": 1, "id": "n01440764/a.JPEG", "label": "tench",
//                   "image": "/abs/train/n01440764/a.JPEG" | null,
//                   "distance": 0.12, "weight": 0.33 | null}, ...]}  // ascending distance
// "image" paths are absolute, null when the file is not known; "weight" is the
// neighbor's vote weight, null past the k that voted. The program answers on
// stdout, either a JSON object {"label": "...", "confidence": 0.9, "reason": "..."}
// (confidence and reason optional) or plain text whose first non-empty line is
// the label. It exits 0. Anything on stderr is kept for error messages.
//
// Thread safety: run_rerank may be called from several threads at once (each
// call owns its pipes and child; SIGPIPE is blocked only in the calling thread
// while it writes). rerank_request is a pure function.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "decision.h"
#include "memory.h"

namespace vismem {

struct RerankAnswer {
  std::string label;
  std::optional<double> confidence;
  std::string reason;
  std::string stderr_text;  // what the program wrote on stderr (tail), for logs
};

// Runs cmd, feeds it the request, waits at most timeout_s seconds (then kills
// its process group). Throws vismem::Error, with the tail of the program's
// stderr, on a failed start, a non-zero exit or signal, a timeout, an empty
// answer, or a JSON answer without a non-empty string "label".
RerankAnswer run_rerank(const std::string& cmd, const nlohmann::json& request, int timeout_s);

// The request document above. neighbor_images: one path per neighbor ("" =
// unknown), or empty (all unknown). Relative paths are made absolute so the
// program may run anywhere.
nlohmann::json rerank_request(const std::string& query_id, const std::string& query_image, const std::string& vote_rule,
                              int k, const std::string& prediction, const std::vector<Neighbor>& neighbors,
                              const std::vector<std::string>& neighbor_images, const Decision& decision);

// The answer as the program printed it (the parsing half of run_rerank).
RerankAnswer parse_rerank_answer(const std::string& out);

}  // namespace vismem
