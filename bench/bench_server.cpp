// bench_server: the HTTP service's cost per classify request, against the
// baseline of calling the library directly (search + decide_query + the same
// JSON) on the same memory and queries, for several numbers of concurrent
// clients: queries/s and per-request p50/p99 latency, medians over reps.
//
//   bench_server MEMORY.db [--queries 400] [--k 20] [--clients 1,8,64] [--reps 3]
//   bench_server --synthetic 20200 [--dim 1024] ...   (random unit vectors, 200 labels, in a temp file)
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "decision.h"
#include "memory.h"
#include "server.h"

using namespace vismem;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Run {
  double qps, p50_ms, p99_ms;
};

// nq requests split over `clients` threads; f(client, i) does request i.
template <class F>
Run timed(int nq, int clients, F f) {
  std::vector<std::vector<double>> lat(clients);
  const auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int c = 0; c < clients; ++c)
    ts.emplace_back([&, c] {
      for (int i = c; i < nq; i += clients) {
        const auto s = Clock::now();
        f(c, i);
        lat[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      }
    });
  for (auto& t : ts) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return {nq / secs, percentile(all, 0.5), percentile(all, 0.99)};
}

// A memory of n random unit vectors in 200 labels (what a search costs does
// not depend on what the vectors mean).
std::string synthetic_memory(int64_t n, int d) {
  const std::string path = (std::filesystem::temp_directory_path() / ("bench_server_" + std::to_string(getpid()) + ".db")).string();
  Memory m = Memory::create(path, {.dim = d, .model_id = "synthetic"});
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  const int64_t chunk = 2048;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t c = std::min(chunk, n - s);
    std::vector<float> x(static_cast<size_t>(c * d));
    for (auto& v : x) v = nd(g);
    std::vector<std::string> ids, labels;
    for (int64_t i = s; i < s + c; ++i) {
      ids.push_back("item" + std::to_string(i));
      labels.push_back("class" + std::to_string(i % 200));
    }
    m.add(ids, labels, x.data());
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_server MEMORY.db | --synthetic N [--dim 1024] [--queries 400] [--k 20] "
                         "[--clients 1,8,64] [--reps 3]\n");
    return 2;
  }
  int nq = 400, k = 20, reps = 3, dim = 1024;
  int64_t synthetic = 0;
  std::string mem_path, clients_arg = "1,8,64";
  int first = 1;
  if (std::strcmp(argv[1], "--synthetic") && argv[1][0] != '-') {
    mem_path = argv[1];
    first = 2;
  }
  for (int i = first; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--queries")) nq = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--k")) k = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--clients")) clients_arg = argv[i + 1];
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--synthetic")) synthetic = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dim")) dim = std::atoi(argv[i + 1]);
  }
  std::vector<int> client_counts;
  {
    std::stringstream ss(clients_arg);
    for (std::string s; std::getline(ss, s, ',');) client_counts.push_back(std::stoi(s));
  }
  try {
    if (synthetic > 0) mem_path = synthetic_memory(synthetic, dim);
    if (mem_path.empty()) throw std::runtime_error("give a memory file or --synthetic N");
    Memory local = Memory::open(mem_path);
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
    o.limits.max_connections = 256;
    Server srv(Memory::open(mem_path), o);
    const int port = srv.bind("127.0.0.1", 0);
    std::thread th([&] { srv.run(); });
    std::vector<std::string> bodies;
    for (auto& e : q) bodies.push_back(nlohmann::json{{"embedding", e}, {"k", k}}.dump());

    std::printf("memory %s: %lld items, d=%d; %d queries, k=%d, median of %d\n", mem_path.c_str(),
                static_cast<long long>(local.size()), d, nq, k, reps);
    std::printf("%8s | %10s %8s %8s | %10s %8s %8s | %s\n", "clients", "HTTP q/s", "p50 ms", "p99 ms", "lib q/s",
                "p50 ms", "p99 ms", "lib/HTTP");
    int failures = 0;
    for (int clients : client_counts) {
      std::vector<Run> http, lib;
      for (int r = 0; r < reps; ++r) {
        std::vector<std::unique_ptr<httplib::Client>> conns;
        for (int c = 0; c < clients; ++c) {
          conns.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
          conns.back()->set_keep_alive(true);
          conns.back()->set_read_timeout(60, 0);
        }
        http.push_back(timed(nq, clients, [&](int c, int i) {
          auto res = conns[c]->Post("/v1/classify", bodies[i], "application/json");
          if (!res || res->status != 200) ++failures;
        }));
        lib.push_back(timed(nq, clients, [&](int, int i) {
          auto nn = local.search(q[i].data(), 1, std::max(k, 100), {}, 1);
          QueryDecision qd = decide_query(local, nn[0], Vote::rank, k, 100);
          volatile size_t sink = decision_json("q", "rank", qd).dump().size();
          (void)sink;
        }));
      }
      auto med = [](const std::vector<Run>& v, double Run::*m) {
        std::vector<double> x;
        for (auto& r : v) x.push_back(r.*m);
        return median(x);
      };
      const double hq = med(http, &Run::qps), lq = med(lib, &Run::qps);
      std::printf("%8d | %10.1f %8.2f %8.2f | %10.1f %8.2f %8.2f | %.2fx\n", clients, hq, med(http, &Run::p50_ms),
                  med(http, &Run::p99_ms), lq, med(lib, &Run::p50_ms), med(lib, &Run::p99_ms), lq / hq);
    }
    srv.stop();
    th.join();
    if (synthetic > 0) {
      std::filesystem::remove(mem_path);
      std::filesystem::remove(mem_path + "-wal");
      std::filesystem::remove(mem_path + "-shm");
    }
    if (failures) std::fprintf(stderr, "%d HTTP requests failed\n", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
