// server.h: the HTTP service: one memory behind a small JSON API.
//
// Basic usage:
//   vismem::Server srv(vismem::Memory::open("mem.db"), {});
//   int port = srv.bind("127.0.0.1", 8080);     // 0: any free port
//   srv.run();                                  // blocks until stop() (from another thread or a signal)
//
// Endpoints (JSON in and out; errors are {"error": "..."} with 400, 403, 404 or 500):
//   GET  /v1/info                       the memory's info (as `vismem info --json`)
//   POST /v1/classify                   {"embeddings": [[...], ...] | "embedding": [...], "ids"?, "k"?, "vote"?}
//                                       or an image body (Content-Type image/* or application/octet-stream,
//                                       ?k=&vote=&id=) when the memory is bound to a model;
//                                       answers {"results": [decision, ...]} (decision_json, decision.h)
//   POST /v1/search                     {"embeddings": [[...]], "k"?} -> {"results": [[{id, label, distance}, ...]]}
//   POST /v1/add                        {"ids", "labels", "embeddings", "mode"?: strict|upsert|skip} -> counts
//   POST /v1/remove                     {"ids": [...]} -> {"removed", "items"}
// Writes are refused (403) with read_only. A failed write changes nothing.
// Thread safety: requests run on a thread pool; searches share a read lock,
// add/remove take the write lock; the encoder runs one request at a time.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "memory.h"

namespace vismem {

// A memory's info as JSON (`vismem info --json`, GET /v1/info).
nlohmann::json memory_info_json(const MemoryInfo& i);

struct ServerOptions {
  std::string model;          // encoder override for image requests (default: the memory's model_path)
  bool read_only = false;
  int threads = 0;            // search threads per request (0: default)
  size_t max_body = 64u << 20;
  int default_k = 20;
  std::string default_vote = "rank";
};

class Server {
 public:
  Server(Memory mem, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Binds the socket; returns the port (useful with port 0). Throws vismem::Error on failure.
  int bind(const std::string& host, int port);
  void run();   // serves until stop()
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vismem
