// server.h: the HTTP service: one memory behind a small JSON API, a web page,
// access control and bounded resources.
//
// Basic usage:
//   vismem::ServerOptions o;
//   o.tokens = vismem::read_token_file("tokens.txt");   // or none: writes only from loopback
//   vismem::Server srv(vismem::Memory::open("mem.db"), o);
//   int port = srv.bind("127.0.0.1", 8080);     // 0: any free port; throws if the options are unsafe for host
//   srv.run();                                  // blocks until stop() (from another thread or a signal)
//
// Endpoints (JSON in and out; errors are {"error": "..."}):
//   GET  /                              the web page (web/index.html + web/app.js, built into the binary)
//   GET  /healthz                       {"status": "ok"}: no token, no Host check (load balancers)
//   GET  /metrics                       Prometheus text: requests, latencies, items, generation, connections
//   GET  /v1/info                       the memory's info (as `vismem info --json`)
//   POST /v1/classify                   {"embeddings": [[...], ...] | "embedding": [...], "ids"?, "k"?, "vote"?}
//                                       or an image body (Content-Type image/*, ?k=&vote=&id=) when the
//                                       memory is bound to a model; answers {"results": [decision, ...]}
//   POST /v1/explain                    one image body or {"embedding": [...]} (?k=&vote=&show=): the
//                                       object of `vismem explain --json` (thumbnails as data: URIs)
//   POST /v1/search                     {"embeddings": [[...]], "k"?} -> {"results": [[{id, label, distance}, ...]]}
//   POST /v1/add                        {"ids", "labels", "embeddings", "mode"?: strict|upsert|skip} -> counts
//   POST /v1/remove                     {"ids": [...]} -> {"removed", "items"}
// Status codes: 400 bad input (nothing written), 401 no/unknown token, 403 a
// read token on a write, read-only, or a Host not allowed, 404, 409 empty
// memory, 411 a POST without Content-Length or chunked body, 413 over a
// size limit, 415 a Content-Type other than
// application/json (image/* on classify/explain), 503 too many connections
// or image decodes, 500 (a bug; still a JSON body).
//
// Access: with tokens, every /v1 endpoint and /metrics need
// "Authorization: Bearer TOKEN" (read scope; add/remove: write scope).
// Without tokens, bind() refuses any address but loopback unless read_only.
// Tokens are kept as sha256 digests and compared in constant time.
//
// Resources: every request is bounded by ServerLimits; a client over a limit
// gets a JSON error and the service keeps answering. A connection is served
// by one thread; idle connections (waiting for their next request) are the
// first closed when max_connections are open; a request that does not
// arrive within read_timeout_s (or a response not taken within
// write_timeout_s) has its connection closed, so slow clients cannot hold
// threads.
// Thread safety: searches share a read lock, add/remove take the write lock;
// the encoder runs one request at a time.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "memory.h"

namespace vismem {

// A memory's info as JSON (`vismem info --json`, GET /v1/info).
nlohmann::json memory_info_json(const MemoryInfo& i);

// One API token as the service keeps it: never the token itself.
struct ApiToken {
  std::string sha256;  // 64 lowercase hex chars of sha256(token)
  bool write = false;  // write scope (implies read)
  std::string name;    // for logs and the token file
};
// A token file: one token per line, "SCOPE SHA256 [NAME]" (SCOPE read or
// write), '#' comments. Throws vismem::Error naming the line on anything else.
std::vector<ApiToken> read_token_file(const std::string& path);
// A new random token ("vm_" + 64 hex chars, 256 bits from OpenSSL's RNG).
std::string new_token();
// The token file line for a token.
std::string token_file_line(const std::string& token, bool write, const std::string& name);

struct ServerLimits {
  size_t max_body = 16u << 20;            // bytes of one request body (Content-Length or chunked)
  int max_json_depth = 16;                // nesting of arrays/objects (our documents need 3)
  int64_t max_json_values = 1 << 20;      // values + keys in one JSON body (about 16 bytes each once parsed)
  int max_queries = 256;                  // embeddings in one classify/search/explain request
  int max_k = 1000;                       // k of classify/search/explain
  int64_t max_image_pixels = 40'000'000;  // width * height of an image body, read from its header before decoding
  int max_decodes = 2;                    // image bodies decoded + embedded at once; others wait up to 10 s, then 503
  int read_timeout_s = 30;                // a whole request (headers + body) must arrive within this
  int write_timeout_s = 30;               // a whole response must be taken within this
  int idle_timeout_s = 5;                 // a connection waiting for its next request
  int max_connections = 64;               // open connections (one thread each); then idle ones close, then 503
};

struct ServerOptions {
  std::string model;          // encoder override for image requests (default: the memory's model_path)
  bool read_only = false;
  int threads = 0;            // search threads per request (0: default)
  int default_k = 20;
  std::string default_vote = "rank";
  ServerLimits limits;
  std::vector<ApiToken> tokens;            // empty: no token asked (then writes only on loopback)
  std::vector<std::string> allowed_hosts;  // Host header names (port ignored); "*": any. Empty: localhost,
                                           // 127.0.0.1, ::1 and the bound address (a wildcard bind needs names)
  std::string tls_cert, tls_key;           // PEM files: HTTPS (TLS 1.2+) instead of HTTP
  std::vector<std::string> image_roots;    // where /v1/explain finds neighbors' images (before the memory's folders)
};

class Server {
 public:
  // Throws vismem::Error on unusable options (a TLS file that does not load).
  Server(Memory mem, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Binds the socket; returns the port (useful with port 0). Throws vismem::Error on failure
  // or when host is not loopback and writes would need no token.
  int bind(const std::string& host, int port);
  void run();   // serves until stop()
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

bool is_loopback_host(const std::string& host);

}  // namespace vismem
