// bench_server: the HTTP service's cost per classify request, against the
// baseline of calling the library directly (search + decide_query) on the
// same memory and queries. Prints medians and the ratio.
//
//   bench_server MEMORY.db [--queries 200] [--k 20] [--clients 1] [--reps 3]
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "decision.h"
#include "memory.h"
#include "server.h"

using namespace vismem;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_server MEMORY.db [--queries 200] [--k 20] [--clients 1] [--reps 3]\n");
    return 2;
  }
  int nq = 200, k = 20, clients = 1, reps = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--queries")) nq = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--k")) k = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--clients")) clients = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  try {
    Memory local = Memory::open(argv[1]);
    const int d = local.dim();
    // Queries: stored items with a little noise (realistic neighborhoods).
    auto items = local.items();
    std::mt19937 g(3);
    std::normal_distribution<float> noise(0, 0.02f);
    std::vector<std::vector<float>> q;
    for (int i = 0; i < nq; ++i) {
      auto e = local.embedding(items[g() % items.size()].id);
      for (auto& v : e) v += noise(g);
      q.push_back(e);
    }
    ServerOptions o;
    o.threads = 1;  // one search thread per request: clients give the parallelism
    Server srv(Memory::open(argv[1]), o);
    int port = srv.bind("127.0.0.1", 0);
    std::thread th([&] { srv.run(); });
    std::vector<std::string> bodies;
    for (auto& e : q) bodies.push_back(nlohmann::json{{"embedding", e}, {"k", k}}.dump());
    std::vector<double> t_http, t_lib;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> cs;
      for (int c = 0; c < clients; ++c)
        cs.emplace_back([&, c] {
          httplib::Client cl("127.0.0.1", port);
          for (int i = c; i < nq; i += clients) {
            auto res = cl.Post("/v1/classify", bodies[i], "application/json");
            if (!res || res->status != 200) std::fprintf(stderr, "request %d failed\n", i);
          }
        });
      for (auto& c : cs) c.join();
      t_http.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> ls;
      for (int c = 0; c < clients; ++c)
        ls.emplace_back([&, c] {
          for (int i = c; i < nq; i += clients) {
            auto nn = local.search(q[i].data(), 1, std::max(k, 100), {}, 1);
            QueryDecision qd = decide_query(local, nn[0], Vote::rank, k, 100);
            volatile size_t sink = decision_json("q", "rank", qd).dump().size();
            (void)sink;
          }
        });
      for (auto& c : ls) c.join();
      t_lib.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    srv.stop();
    th.join();
    double h = median(t_http), l = median(t_lib);
    std::printf("memory %s: %lld items, d=%d; %d queries, k=%d, %d client(s), median of %d\n", argv[1],
                static_cast<long long>(local.size()), d, nq, k, clients, reps);
    std::printf("HTTP /v1/classify:      %.1f requests/s (%.2f ms each)\n", nq / h, 1000 * h / nq);
    std::printf("library (baseline):     %.1f queries/s (%.2f ms each)\n", nq / l, 1000 * l / nq);
    std::printf("ratio library / HTTP:   %.2fx (the service's overhead: JSON, sockets, locks)\n", h / l);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
