#include "server_net.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <sstream>
#include <thread>
#include <vector>

namespace vismem::net {

namespace {

using Clock = std::chrono::steady_clock;
int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
constexpr int64_t kNever = INT64_MAX;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int kKeepAliveMax = 100;  // requests on one connection

// ---------------------------------------------------------------- metrics

const char* const kEndpoints[] = {"/", "/app.js", "/healthz", "/metrics", "/v1/info", "/v1/classify",
                                  "/v1/explain", "/v1/search", "/v1/add", "/v1/remove"};
constexpr double kBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kNBuckets = sizeof kBuckets / sizeof kBuckets[0];

static_assert(kNBuckets == kLatencyBuckets);

}  // namespace

void Metrics::record(const std::string& path, int status, double seconds) {
  std::string ep = "other";
  for (const char* e : kEndpoints)
    if (path == e) ep = e;
  std::lock_guard<std::mutex> g(m);
  Ep& e = eps[ep];
  ++e.by_status[status];
  size_t b = 0;
  while (b < kNBuckets && seconds > kBuckets[b]) ++b;
  ++e.buckets[b];
  e.sum += seconds;
  ++e.count;
}


std::string Metrics::text(int64_t items, int64_t generation) {
  std::ostringstream o;
  o << "# HELP vismem_requests_total HTTP requests answered, by endpoint and status.\n"
       "# TYPE vismem_requests_total counter\n";
  std::lock_guard<std::mutex> g(m);
  for (auto& [ep, e] : eps)
    for (auto& [st, c] : e.by_status)
      o << "vismem_requests_total{endpoint=\"" << ep << "\",code=\"" << st << "\"} " << c << "\n";
  o << "# HELP vismem_request_duration_seconds Time from a request's first byte to its response written.\n"
       "# TYPE vismem_request_duration_seconds histogram\n";
  for (auto& [ep, e] : eps) {
    int64_t cum = 0;
    for (size_t b = 0; b <= kNBuckets; ++b) {
      cum += e.buckets[b];
      o << "vismem_request_duration_seconds_bucket{endpoint=\"" << ep << "\",le=\"";
      if (b < kNBuckets) o << kBuckets[b];
      else o << "+Inf";
      o << "\"} " << cum << "\n";
    }
    o << "vismem_request_duration_seconds_sum{endpoint=\"" << ep << "\"} " << e.sum << "\n";
    o << "vismem_request_duration_seconds_count{endpoint=\"" << ep << "\"} " << e.count << "\n";
  }
  o << "# HELP vismem_items Items in the memory.\n# TYPE vismem_items gauge\nvismem_items " << items << "\n"
    << "# HELP vismem_generation The memory's generation (bumped by every write).\n# TYPE vismem_generation gauge\n"
    << "vismem_generation " << generation << "\n"
    << "# HELP vismem_connections_open Connections open now.\n# TYPE vismem_connections_open gauge\n"
    << "vismem_connections_open " << open << "\n"
    << "# HELP vismem_connections_total Connections by outcome: accepted, rejected (503, limit), evicted (idle, "
       "closed for a new one), timed_out (read/write/idle timeout).\n# TYPE vismem_connections_total counter\n"
    << "vismem_connections_total{outcome=\"accepted\"} " << accepted << "\n"
    << "vismem_connections_total{outcome=\"rejected\"} " << rejected << "\n"
    << "vismem_connections_total{outcome=\"evicted\"} " << evicted << "\n"
    << "vismem_connections_total{outcome=\"timed_out\"} " << timed_out << "\n";
  return o.str();
}

// ---------------------------------------------------------------- connections
// (Not in an anonymous namespace: Listener, declared in the header, holds a Registry.)

// One accepted connection as the watchdog sees it.
struct Conn {
  int fd = -1;
  std::atomic<int64_t> deadline{kNever};  // steady-clock ns; past it the socket is shut down
  std::atomic<bool> idle{true};           // waiting for a request's first byte: may be closed for a newcomer
  std::atomic<bool> killed{false};
  int64_t since = 0;
};

// Every open connection, and a watchdog thread that shuts down the socket of
// any connection past its deadline: a blocked read or write then returns at
// once, whatever the client trickles. Sockets are only shut down under the
// lock and closed by their owner after remove(), so a number is never reused
// under the watchdog.
class Registry {
 public:
  explicit Registry(Metrics& m) : metrics_(m), watchdog_([this] { watch(); }) {}
  ~Registry() {
    {
      std::lock_guard<std::mutex> g(m_);
      quit_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
  }
  void add(Conn* c) {
    std::lock_guard<std::mutex> g(m_);
    live_.push_back(c);
    ++metrics_.open;
    ++metrics_.accepted;
    if (stopping_) kill(c);
  }
  void remove(Conn* c) {
    std::lock_guard<std::mutex> g(m_);
    live_.remove(c);
    --metrics_.open;
  }
  // Closes the longest-idle connection to make room; false if none is idle.
  bool evict_idle() {
    std::lock_guard<std::mutex> g(m_);
    Conn* oldest = nullptr;
    for (Conn* c : live_)
      if (c->idle && !c->killed && (!oldest || c->since < oldest->since)) oldest = c;
    if (!oldest) return false;
    ++metrics_.evicted;
    kill(oldest);
    return true;
  }
  // Shutting down: idle connections close now, one still arriving or being
  // sent gets a second more, a request being computed is answered.
  void stop_all() {
    std::lock_guard<std::mutex> g(m_);
    stopping_ = true;
    const int64_t soon = now_ns() + kSecond;
    for (Conn* c : live_) {
      if (c->idle) kill(c);
      else if (c->deadline.load() > soon && c->deadline.load() != kNever) c->deadline = soon;
    }
  }
  bool stopping() {
    std::lock_guard<std::mutex> g(m_);
    return stopping_;
  }

 private:
  void kill(Conn* c) {  // under m_
    if (!c->killed.exchange(true)) ::shutdown(c->fd, SHUT_RDWR);
  }
  void watch() {
    std::unique_lock<std::mutex> g(m_);
    while (!quit_) {
      cv_.wait_for(g, std::chrono::milliseconds(50));
      const int64_t now = now_ns();
      for (Conn* c : live_)
        if (!c->killed && c->deadline.load() < now) {
          ++metrics_.timed_out;  // counted before the client can see the close
          kill(c);
        }
    }
  }
  Metrics& metrics_;
  std::mutex m_;
  std::condition_variable cv_;
  std::list<Conn*> live_;
  bool stopping_ = false, quit_ = false;
  std::thread watchdog_;
};

static thread_local RequestState tl_request;

RequestState& current_request() { return tl_request; }

static thread_local bool tl_reject = false;  // set by the pool: answer 503 and close

// The socket as httplib's Stream: buffered reads, every read and write bounded
// by the connection's deadline (through the watchdog), TLS when ssl is set.
class ConnStream : public httplib::Stream {
 public:
  ConnStream(Conn& c, const ServerLimits& l, std::atomic<int64_t>& timed_out) : c_(c), lim_(l), timed_out_(timed_out) {}
  SSL* ssl = nullptr;

  void next_request() {
    phase_ = Phase::idle;
    head_bytes_ = 0;
    body_bytes_ = 0;
    crlf_ = 0;
    c_.idle = true;
    c_.deadline = now_ns() + int64_t(lim_.idle_timeout_s) * kSecond;
  }
  // The request is read: the handler's time is not bounded by the read timeout.
  void computing() {
    if (phase_ != Phase::writing) c_.deadline = kNever;
  }

  bool is_readable() const override { return true; }  // reads block; the watchdog bounds them
  bool is_writable() const override { return !c_.killed; }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == end_) {
      const ssize_t r = raw_read(buf_, sizeof buf_);
      if (r <= 0) return -1;
      pos_ = 0;
      end_ = static_cast<size_t>(r);
    }
    if (phase_ == Phase::idle) {
      phase_ = Phase::head;
      c_.idle = false;
      tl_request.started = now_ns();
      c_.deadline = tl_request.started + int64_t(lim_.read_timeout_s) * kSecond;
    }
    size_t m = std::min(size, end_ - pos_);
    if (phase_ == Phase::head) {
      // httplib bounds each header line, not their number: bound the whole head.
      for (size_t i = 0; i < m; ++i) {
        // crlf_: 0 in a line, 1 after "\r", 2 after a line's "\n", 3 after "\n\r"; an empty line ends the head.
        const char ch = buf_[pos_ + i];
        if (ch == '\r') crlf_ = crlf_ == 2 ? 3 : 1;
        else if (ch == '\n') crlf_ = crlf_ >= 2 ? 4 : 2;
        else crlf_ = 0;
        if (crlf_ == 4) {
          phase_ = Phase::body;
          m = i + 1;
          break;
        }
      }
      head_bytes_ += m;
      if (phase_ == Phase::head && head_bytes_ > kMaxHead) return -1;
    } else if (phase_ == Phase::body) {
      // httplib 0.11 bounds a body by its Content-Length only: a chunked one
      // is bounded here (the slack is for the chunks' own framing).
      body_bytes_ += m;
      if (body_bytes_ > lim_.max_body + lim_.max_body / 8 + 65536) {
        tl_request.too_large = true;
        return -1;
      }
    }
    std::memcpy(ptr, buf_ + pos_, m);
    pos_ += m;
    return static_cast<ssize_t>(m);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (phase_ != Phase::writing) {
      phase_ = Phase::writing;
      c_.deadline = now_ns() + int64_t(lim_.write_timeout_s) * kSecond;
    }
    size_t done = 0;
    while (done < size) {
      ssize_t w;
      if (ssl) {
        w = SSL_write(ssl, ptr + done, static_cast<int>(std::min<size_t>(size - done, 1 << 30)));
      } else {
        w = ::send(c_.fd, ptr + done, size - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !c_.killed.exchange(true)) ++timed_out_;  // SO_SNDTIMEO
      }
      if (w <= 0) return -1;
      done += static_cast<size_t>(w);
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(false, ip, port); }
  socket_t socket() const override { return c_.fd; }

  // After a refused request whose body was not read: let the client read the
  // answer before the close (closing with unread data would reset the
  // connection and lose it), draining for at most 2 s.
  void linger() {
    c_.deadline = now_ns() + 2 * kSecond;
    if (ssl) SSL_shutdown(ssl);
    ::shutdown(c_.fd, SHUT_WR);
    char sink[4096];
    while (::recv(c_.fd, sink, sizeof sink, 0) > 0) {
    }
  }

 private:
  enum class Phase { idle, head, body, writing };
  static constexpr size_t kMaxHead = 64 * 1024;

  ssize_t raw_read(char* p, size_t n) {
    for (;;) {
      ssize_t r;
      if (ssl) {
        const int s = SSL_read(ssl, p, static_cast<int>(n));
        r = s > 0 ? s : -1;
      } else {
        r = ::recv(c_.fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        // httplib also sets SO_RCVTIMEO (the read timeout) on the socket: a
        // read that outlives it is a timeout like the watchdog's.
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !c_.killed.exchange(true)) ++timed_out_;
      }
      // Acknowledge at once: a client that writes a request's head and body
      // separately (Nagle on, as httplib and Python do) otherwise waits for
      // our delayed ACK, 40 ms on every keep-alive request. Linux clears the
      // flag again by itself, hence after every read.
      const int one = 1;
      setsockopt(c_.fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
      return r;
    }
  }
  void address(bool peer, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = -1;
    if ((peer ? getpeername(c_.fd, reinterpret_cast<sockaddr*>(&a), &len)
              : getsockname(c_.fd, reinterpret_cast<sockaddr*>(&a), &len)) != 0)
      return;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  Conn& c_;
  const ServerLimits& lim_;
  std::atomic<int64_t>& timed_out_;
  char buf_[16384];
  size_t pos_ = 0, end_ = 0;
  Phase phase_ = Phase::idle;
  size_t head_bytes_ = 0, body_bytes_ = 0;
  int crlf_ = 0;  // progress through "\r\n\r\n" (bare "\n\n" too)
};

// httplib's task queue: one thread per connection up to max_connections. A
// connection past the limit first closes the longest-idle one; with none
// idle it is answered 503 on the accepting thread (a write to a fresh socket
// does not block) and closed.
class ConnectionPool : public httplib::TaskQueue {
 public:
  ConnectionPool(Registry& r, int n) : reg_(r), limit_(static_cast<size_t>(n)) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> g(m_);
      if (jobs_.size() + running_ < limit_ || (jobs_.size() < limit_ && reg_.evict_idle())) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    tl_reject = true;
    fn();
    tl_reject = false;
  }
  void shutdown() override {
    reg_.stop_all();
    {
      std::lock_guard<std::mutex> g(m_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [this] { return quit_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // quit_ and nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        ++running_;
      }
      fn();
      std::lock_guard<std::mutex> g(m_);
      --running_;
    }
  }
  Registry& reg_;
  size_t limit_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t running_ = 0;
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

static thread_local ConnStream* tl_stream = nullptr;  // the connection this thread serves

Listener::Listener(const ServerLimits& l, Metrics& m, SSL_CTX* tls)
    : lim_(l), metrics_(m), tls_(tls), reg_(std::make_unique<Registry>(m)) {
  set_keep_alive_max_count(kKeepAliveMax);
  new_task_queue = [this] { return new ConnectionPool(*reg_, lim_.max_connections); };
}

Listener::~Listener() = default;

void Listener::widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

bool Listener::process_and_close_socket(socket_t sock) {
  if (tl_reject) {
    ++metrics_.rejected;
    if (!tls_) {
      static const std::string body = "{\"error\":\"too many connections: try again later (--max-connections)\"}";
      static const std::string msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                     "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                                     std::to_string(body.size()) + "\r\n\r\n" + body;
      [[maybe_unused]] ssize_t w = ::send(sock, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return true;
  }
  // A response is two writes (head, body): without NODELAY the second one
  // waits for the client's delayed ACK of the first (40 ms a request).
  const int one = 1;
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  Conn c;
  c.fd = sock;
  c.since = now_ns();
  // The TLS handshake must also finish within the read timeout.
  c.deadline = c.since + int64_t(tls_ ? lim_.read_timeout_s : lim_.idle_timeout_s) * kSecond;
  reg_->add(&c);
  {
    ConnStream strm(c, lim_, metrics_.timed_out);
    SSL* ssl = nullptr;
    bool ok = true;
    if (tls_) {
      ssl = SSL_new(tls_);
      ok = ssl && SSL_set_fd(ssl, sock) == 1 && SSL_accept(ssl) == 1;
      strm.ssl = ssl;
      ERR_clear_error();
    }
    for (int left = kKeepAliveMax; ok && left > 0 && !c.killed; --left) {
      strm.next_request();
      tl_request = RequestState{};
      tl_stream = &strm;
      bool closed = false;
      const bool answered = process_request(strm, left == 1 || reg_->stopping(), closed, nullptr);
      if (answered && tl_request.status)
        metrics_.record(tl_request.path, tl_request.status, double(now_ns() - tl_request.started) / kSecond);
      if (answered && tl_request.close) {  // refused with its body unread: no next request on this connection
        strm.linger();
        break;
      }
      if (!answered || closed || left == 1 || reg_->stopping()) break;
    }
    tl_stream = nullptr;
    if (ssl) {
      if (!c.killed) SSL_shutdown(ssl);
      SSL_free(ssl);
    }
  }
  reg_->remove(&c);
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return true;
}


void request_read() {
  tl_request.body_done = true;
  if (tl_stream) tl_stream->computing();
}

}  // namespace vismem::net
