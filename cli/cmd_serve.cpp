// serve: the memory as an HTTP service (server.h).
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <exception>
#include <iostream>
#include <thread>

#include "common.h"
#include "error.h"
#include "server.h"

namespace vismem::cli {

namespace {
int stop_pipe[2] = {-1, -1};  // the signal handler's only way out
}  // namespace

void add_serve_commands(CLI::App& app) {
  auto* c = app.add_subcommand("serve", "Serve a memory over HTTP (JSON API: /v1/info, /v1/classify, /v1/search, /v1/add, /v1/remove)");
  struct A {
    std::string mem, host = "127.0.0.1", model;
    int port = 8080, threads = 0, k = 20;
    std::string vote = "rank";
    bool read_only = false;
  };
  auto a = std::make_shared<A>();
  c->add_option("memory", a->mem, "Memory file")->required();
  c->add_option("--host", a->host, "Address to listen on (default 127.0.0.1: this machine only)");
  c->add_option("--port", a->port, "Port (0: any free port, printed)")->check(CLI::Range(0, 65535));
  c->add_flag("--read-only", a->read_only, "Refuse /v1/add and /v1/remove");
  c->add_option("--model", a->model, "Encoder for image requests (default: the memory's model)");
  c->add_option("--k", a->k, "Default k for /v1/classify")->check(kPositiveInt);
  c->add_option("--vote", a->vote, "Default rule for /v1/classify")
      ->check(CLI::IsMember({"plurality", "distance", "softmax", "rank"}));
  c->add_option("--threads", a->threads, "Search threads per request (default: all cores)")->check(kThreadCount);
  c->callback([a] {
    ServerOptions o;
    o.model = a->model;
    o.read_only = a->read_only;
    o.threads = a->threads;
    o.default_k = a->k;
    o.default_vote = a->vote;
    // SIGINT/SIGTERM end the service cleanly. A handler may not call into the
    // server, and any thread (BLAS ones included) may receive the signal, so
    // the handler only writes to a pipe that a watcher thread reads.
    if (pipe(stop_pipe) != 0) throw Error("cannot create a pipe");
    struct sigaction sa {};
    sa.sa_handler = [](int) {
      const char b = 1;
      [[maybe_unused]] ssize_t w = write(stop_pipe[1], &b, 1);
    };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    struct sigaction old_int {};
    sigaction(SIGINT, nullptr, &old_int);
    if (old_int.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);  // started with SIGINT ignored: keep it so
    Server srv(open_memory(a->mem), o);
    int port = srv.bind(a->host, a->port);
    std::cout << "serving " << a->mem << " on http://" << a->host << ":" << port << (a->read_only ? " (read-only)" : "")
              << std::endl;
    std::atomic<bool> finished{false};
    std::thread waiter([&] {
      char b = 0;
      while (read(stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
      }
      // stop() is a no-op until the server runs: repeat until run() returned.
      while (!finished) {
        srv.stop();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
    std::exception_ptr failed;
    try {
      srv.run();
    } catch (...) {
      failed = std::current_exception();
    }
    // run() may also end on its own (an error): wake the waiter so it can be joined.
    finished = true;
    const char b = 0;
    [[maybe_unused]] ssize_t w = write(stop_pipe[1], &b, 1);
    waiter.join();
    if (failed) std::rethrow_exception(failed);
    std::cout << "stopped" << std::endl;
  });
}

}  // namespace vismem::cli
