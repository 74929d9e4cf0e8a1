// server_net.h: the HTTP service's connection layer, internal to server.cpp:
// httplib parses and routes each request; this layer owns the sockets: one
// thread per connection up to a limit (then the longest-idle connection is
// closed for a newcomer, or it is answered 503), whole-request read and
// write deadlines enforced by a watchdog that shuts the socket, TLS, and the
// request counters behind /metrics.
//
// Basic usage (server.cpp):
//   net::Metrics m;
//   net::Listener http(limits, m, ssl_ctx_or_null);     // an httplib::Server: add routes to it
//   http.bind_to_any_port("127.0.0.1"); http.widen_backlog(); http.listen_after_bind();
//   // in a handler: net::request_read() once the body is read; net::current_request() for its state
// Thread safety: Metrics is shared by every connection thread (locked);
// RequestState is per thread.
#pragma once
#include <httplib.h>
#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "server.h"

namespace vismem::net {

constexpr size_t kLatencyBuckets = 13;

struct Metrics {
  std::mutex m;
  struct Ep {
    std::map<int, int64_t> by_status;
    std::array<int64_t, kLatencyBuckets + 1> buckets{};
    double sum = 0;
    int64_t count = 0;
  };
  std::map<std::string, Ep> eps;
  std::atomic<int64_t> open{0}, accepted{0}, rejected{0}, evicted{0}, timed_out{0};

  // One answered request: its endpoint (unknown paths count as "other"), status, seconds.
  void record(const std::string& path, int status, double seconds);
  // The Prometheus text exposition of everything above, with the memory's items and generation.
  std::string text(int64_t items, int64_t generation);
};

// The state of the request the calling thread is serving.
struct RequestState {
  int64_t started = 0;     // first byte of the request
  bool body_done = false;  // the request was read to its end (a reply keeps the connection usable)
  bool close = false;      // close after this response (the body may be unread)
  bool too_large = false;  // the stream stopped a body past the limit (chunked: no Content-Length to check)
  int status = 0;          // of the response written (0: none)
  std::string path;
};
RequestState& current_request();

// The request's body is read: its handler is not bounded by the read timeout.
void request_read();

class Registry;

// httplib::Server with our own connection handling.
class Listener : public httplib::Server {
 public:
  Listener(const ServerLimits& l, Metrics& m, SSL_CTX* tls);
  ~Listener() override;
  // httplib listens with a backlog of 5: a burst of connections (the idle
  // ones that are then closed for newcomers) would have SYNs dropped and
  // clients wait a second each. listen() again sets a longer queue. After bind.
  void widen_backlog();

 private:
  bool process_and_close_socket(socket_t sock) override;
  const ServerLimits& lim_;
  Metrics& metrics_;
  SSL_CTX* tls_;
  std::unique_ptr<Registry> reg_;
};

}  // namespace vismem::net
