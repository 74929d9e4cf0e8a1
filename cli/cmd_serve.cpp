// serve: the memory as an HTTP service (server.h).
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "common.h"
#include "error.h"
#include "hash.h"
#include "server.h"

namespace vismem::cli {

namespace {
int stop_pipe[2] = {-1, -1};  // the signal handler's only way out
}  // namespace

void add_serve_commands(CLI::App& app) {
  {
    auto* t = app.add_subcommand("token", "Make an API token for `vismem serve --tokens FILE`: appends its hash to FILE, "
                                           "prints the token (shown once)");
    struct T {
      std::string file, scope = "read", name;
    };
    auto ta = std::make_shared<T>();
    t->add_option("--file", ta->file, "Token file to append to (created, mode 600)")->required();
    t->add_option("--scope", ta->scope, "read (info, classify, search, explain, metrics) or write (also add, remove)")
        ->check(CLI::IsMember({"read", "write"}));
    t->add_option("--name", ta->name, "A name for the token (kept in the file, for you)");
    t->callback([ta] {
      if (ta->name.find_first_of("\r\n") != std::string::npos) throw Error("--name must be one line");
      const std::string token = new_token();
      const bool existed = std::filesystem::exists(ta->file);
      {
        std::ofstream f(ta->file, std::ios::app);
        if (!f) throw Error(ta->file + ": cannot open for appending");
        f << token_file_line(token, ta->scope == "write", ta->name) << "\n";
        if (!f.flush()) throw Error(ta->file + ": write failed");
      }
      if (!existed) std::filesystem::permissions(ta->file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
      read_token_file(ta->file);  // the file still reads as a whole
      std::cout << token << std::endl;
    });
  }
  auto* c = app.add_subcommand("serve", "Serve a memory over HTTP (JSON API, web page at /; see the README's service section)");
  add_search_options(c);
  struct A {
    std::string mem, host = "127.0.0.1", model, tokens, tls_cert, tls_key;
    int port = 8080, threads = 0, k = 20;
    std::string vote = "rank";
    bool read_only = false, generate_token = false;
    std::vector<std::string> allow_hosts, image_roots;
    ServerLimits lim;
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
  c->add_option("--tokens", a->tokens, "Token file (`vismem token`): every /v1 endpoint and /metrics then need "
                                       "\"Authorization: Bearer TOKEN\" (write scope for add/remove)");
  c->add_flag("--generate-token", a->generate_token, "Make a write token for this run and print it once (kept only as a hash)");
  c->add_option("--allow-host", a->allow_hosts, "Host header name clients use (repeatable; '*': any). Default: localhost, "
                                                "127.0.0.1, ::1 and --host; needed when --host is 0.0.0.0");
  c->add_option("--tls-cert", a->tls_cert, "PEM certificate (chain): serve HTTPS");
  c->add_option("--tls-key", a->tls_key, "PEM private key of --tls-cert");
  c->add_option("--image-root", a->image_roots, "Folder where /v1/explain finds neighbors' images (repeatable; before the "
                                                "folders `vismem add` recorded)");
  auto& l = a->lim;
  const auto pos = CLI::PositiveNumber;
  c->add_option("--max-body", l.max_body, "Largest request body, bytes")->check(pos)->capture_default_str();
  c->add_option("--max-json-depth", l.max_json_depth, "Deepest JSON nesting")->check(CLI::Range(3, 1000))->capture_default_str();
  c->add_option("--max-json-values", l.max_json_values, "Most values + keys in one JSON body")->check(pos)->capture_default_str();
  c->add_option("--max-queries", l.max_queries, "Most embeddings in one classify/search request")->check(pos)->capture_default_str();
  c->add_option("--max-k", l.max_k, "Largest k a request may ask")->check(pos)->capture_default_str();
  c->add_option("--max-image-pixels", l.max_image_pixels, "Largest image (width x height, from its header)")->check(pos)->capture_default_str();
  c->add_option("--max-decodes", l.max_decodes, "Image bodies decoded at once")->check(CLI::Range(1, 1024))->capture_default_str();
  c->add_option("--read-timeout", l.read_timeout_s, "Seconds a whole request may take to arrive")->check(pos)->capture_default_str();
  c->add_option("--write-timeout", l.write_timeout_s, "Seconds a whole response may take to be taken")->check(pos)->capture_default_str();
  c->add_option("--idle-timeout", l.idle_timeout_s, "Seconds a connection may wait for its next request")->check(pos)->capture_default_str();
  c->add_option("--max-connections", l.max_connections, "Open connections (one thread each)")->check(CLI::Range(1, 4096))->capture_default_str();
  c->callback([a] {
    ServerOptions o;
    o.limits = a->lim;
    if (!a->tokens.empty()) o.tokens = read_token_file(a->tokens);
    std::string generated;
    if (a->generate_token) {
      generated = new_token();
      o.tokens.push_back({sha256_hex(generated.data(), generated.size()), true, "generated"});
    }
    o.allowed_hosts = a->allow_hosts;
    o.tls_cert = a->tls_cert;
    o.tls_key = a->tls_key;
    o.image_roots = a->image_roots;
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
    const bool v6 = a->host.find(':') != std::string::npos && a->host.front() != '[';
    if (!generated.empty()) std::cout << "write token (shown once): " << generated << std::endl;
    std::cout << "serving " << a->mem << " on " << (o.tls_cert.empty() ? "http" : "https") << "://"
              << (v6 ? "[" + a->host + "]" : a->host) << ":" << port << (a->read_only ? " (read-only)" : "")
              << (o.tokens.empty() ? "" : " (tokens required)") << std::endl;
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
