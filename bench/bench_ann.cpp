// bench_ann: approximate search inside the memory (FAISS indexes, candidates
// re-scored with the exact vectors) against exact search of the same memory
// and against the same FAISS index searched directly, in one run.
//
// Usage:
//   bench_ann --n 1281167 --d 1024 --factory IVF1024,PQ64 --nprobe 1,2,4,8,16,32 --dir /tmp/vismem_ann
//   bench_ann --memory-npy train.npy --memory-labels train.txt --query-npy val.npy --query-labels val.txt \
//             --factory "IVF64,Flat;IVF64,PQ32;HNSW32" --dir /tmp/vismem_ann_real
//   bench_ann --n 10000000 --d 768 --factory IVF256,PQ32 --queries 32 --big --keep --dir /big/disk
//   --k-factor F: candidates per neighbor re-scored (1 isolates the memory's own overhead over FAISS)
//
// Synthetic data: n unit vectors around --clusters centers (label = cluster),
// generated in chunks (a memory larger than RAM never exists in RAM). Per
// factory it prints: build time, bytes per item; per nprobe / efSearch:
// recall@k against exact search, queries/s for one batch of all queries,
// median ms of single queries, accuracy@k of the four voting rules (label
// agreement with exact search's prediction and with the query's own label),
// and FAISS used directly (same index object, k neighbors, no re-scoring).
// --big: skip the FAISS-direct rows and the per-value single-query timings
// (each exact pass reads the whole vector file), and time `vismem classify`
// and `vismem remove` as whole processes.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "aggregate.h"
#include "error.h"
#include "faiss_index.h"
#include "memory.h"
#include "npy.h"
#include "textio.h"

using namespace vismem;
namespace fs = std::filesystem;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, sep))
    if (!x.empty()) out.push_back(x);
  return out;
}
double rss_gb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1e6;
}

// Clustered unit vectors, reproducible chunk by chunk: row i depends only on (seed, i).
struct Synth {
  int d, clusters;
  std::vector<float> centers;
  Synth(int d_, int clusters_) : d(d_), clusters(clusters_), centers(static_cast<size_t>(clusters_) * d_) {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> g;
    for (auto& c : centers) c = g(rng);
  }
  // Rows [from, from + n) of stream `seed`: center + uniform noise (fast to draw at 10M x 768).
  void rows(uint64_t seed, int64_t from, int64_t n, float* out, int* label) const {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      uint64_t s = (seed * 0x9E3779B97F4A7C15ull) ^ static_cast<uint64_t>(from + i) * 0xD1B54A32D192ED03ull;
      auto next = [&] {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
      };
      for (int w = 0; w < 4; ++w) next();
      const int c = static_cast<int>(next() % static_cast<uint64_t>(clusters));
      label[i] = c;
      double ss = 0;
      float* r = out + i * d;
      for (int j = 0; j < d; ++j) {
        const float u = static_cast<float>(next() >> 40) * (1.0f / 16777216.0f) - 0.5f;  // uniform [-0.5, 0.5)
        r[j] = centers[static_cast<size_t>(c) * d + j] + 2.4f * u;                     // noise sd ~0.69
        ss += double(r[j]) * r[j];
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(ss));
      for (int j = 0; j < d; ++j) r[j] *= inv;
    }
  }
};

struct Queries {
  int64_t n = 0;
  int d = 0;
  std::vector<float> x;
  std::vector<std::string> labels;
};

struct Run {
  std::string param;
  int value = 0;
  double recall = 1, qps = 0, single_ms = 0;
  double acc_vs_exact[4] = {1, 1, 1, 1};  // share of queries whose prediction equals exact search's
  double acc_label[4] = {0, 0, 0, 0};     // accuracy against the query's label
};

int label_index(std::map<std::string, int>& names, const std::string& l) {
  auto it = names.find(l);
  if (it != names.end()) return it->second;
  const int id = static_cast<int>(names.size());
  names.emplace(l, id);
  return id;
}

// Predictions of each rule at k_vote for every query.
std::vector<std::array<int, 4>> predictions(const std::vector<std::vector<Neighbor>>& res, int k_vote,
                                            std::map<std::string, int>& names) {
  std::vector<std::array<int, 4>> out;
  for (const auto& nn : res) {
    VoteInput in;
    for (int j = 0; j < std::min<int>(k_vote, static_cast<int>(nn.size())); ++j) {
      in.labels.push_back(label_index(names, nn[j].label));
      in.distances.push_back(nn[j].distance);
    }
    std::array<int, 4> p{-1, -1, -1, -1};
    if (!in.labels.empty())
      for (int v = 0; v < 4; ++v) p[v] = predict_all_k(all_votes[v], in).back();
    out.push_back(p);
  }
  return out;
}

int run_process(const std::string& cmd) {
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 0;
  int d = 0, clusters = 1000, nq = 256, k = 100, k_vote = 10, singles = 20, threads = 0, k_factor = 0;
  std::string factories = "IVF1024,PQ64", values_arg, dir = "/tmp/vismem_ann";
  std::string mem_npy, mem_labels, q_npy, q_labels;
  bool big = false, keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--n") n = std::stoll(next());
    else if (a == "--d") d = std::stoi(next());
    else if (a == "--clusters") clusters = std::stoi(next());
    else if (a == "--queries") nq = std::stoi(next());
    else if (a == "--k") k = std::stoi(next());
    else if (a == "--k-vote") k_vote = std::stoi(next());
    else if (a == "--singles") singles = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--k-factor") k_factor = std::stoi(next());
    else if (a == "--factory") factories = next();
    else if (a == "--nprobe" || a == "--ef") values_arg = next();
    else if (a == "--dir") dir = next();
    else if (a == "--memory-npy") mem_npy = next();
    else if (a == "--memory-labels") mem_labels = next();
    else if (a == "--query-npy") q_npy = next();
    else if (a == "--query-labels") q_labels = next();
    else if (a == "--big") big = true;
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of bench/bench_ann.cpp)\n", a.c_str());
      return 2;
    }
  }
  try {
    fs::create_directories(dir);
    const std::string cli = (fs::path(argv[0]).parent_path() / "vismem").string();
    const bool real = !mem_npy.empty();
    Queries q;
    const std::string base = dir + "/ann.db";
    Memory::remove_files(base);
    double add_s = 0;
    {
      // 1. The memory, exact only (a bulk load: the index is built once, after).
      const double t0 = now_s();
      if (real) {
        NpyArray a = read_npy(mem_npy);
        std::vector<float> x = a.to_float();
        d = static_cast<int>(a.shape.at(1));
        n = static_cast<int64_t>(a.shape.at(0));
        std::vector<std::string> labels = read_lines(mem_labels), ids;
        for (int64_t i = 0; i < n; ++i) ids.push_back("m" + std::to_string(i));
        Memory m = Memory::create(base, {.dim = d});
        m.add(ids, labels, x.data());
        NpyArray b = read_npy(q_npy);
        q.x = b.to_float();
        q.n = static_cast<int64_t>(b.shape.at(0));
        q.labels = read_lines(q_labels);
      } else {
        if (n <= 0 || d <= 0) throw Error("give --n and --d (synthetic) or --memory-npy ... (real embeddings)");
        Synth s(d, clusters);
        Memory m = Memory::create(base, {.dim = d});
        m.set_counts_upkeep(false);
        const int64_t chunk = 131072;
        std::vector<float> x(static_cast<size_t>(chunk) * d);
        std::vector<int> lab(static_cast<size_t>(chunk));
        for (int64_t s0 = 0; s0 < n; s0 += chunk) {
          const int64_t c = std::min(chunk, n - s0);
          s.rows(1, s0, c, x.data(), lab.data());
          std::vector<std::string> ids, labels;
          for (int64_t i = 0; i < c; ++i) {
            ids.push_back("m" + std::to_string(s0 + i));
            labels.push_back("c" + std::to_string(lab[i]));
          }
          m.add(ids, labels, x.data());
          std::fprintf(stderr, "\radded %lld / %lld", static_cast<long long>(s0 + c), static_cast<long long>(n));
        }
        std::fprintf(stderr, "\n");
        q.x.resize(static_cast<size_t>(nq) * d);
        std::vector<int> ql(static_cast<size_t>(nq));
        s.rows(2, 0, nq, q.x.data(), ql.data());
        q.n = nq;
        for (int l : ql) q.labels.push_back("c" + std::to_string(l));
      }
      add_s = now_s() - t0;
    }
    q.d = d;
    const int64_t mem_bytes = static_cast<int64_t>(n) * d * 4;
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::printf("# bench_ann: n = %lld, d = %d (%.2f GB of float32), %lld queries, recall@%d, votes at k = %d, %s\n",
                static_cast<long long>(n), d, mem_bytes / 1e9, static_cast<long long>(q.n), k, k_vote,
                real ? ("real embeddings " + mem_npy).c_str() : ("synthetic, " + std::to_string(clusters) + " clusters").c_str());
    std::printf("# add (exact memory, %lld rows): %.1f s\n\n", static_cast<long long>(n), add_s);
    std::fflush(stdout);

    int64_t removed_row = 17;
    for (const std::string& factory : split(factories, ';')) {
      Memory m = Memory::open(base);
      double t0 = now_s();
      m.set_index(factory);
      const double build_s = now_s() - t0;
      if (!m.index_info()->built) m.rebuild_index();
      IndexInfo ii = *m.index_info(true);
      std::printf("## %s (%s): build %.1f s (train + add + write), %.1f MB on disk, %.1f bytes per item, peak RSS %.2f GB,"
                  " k-factor %d (candidates per neighbor re-scored)\n\n",
                  factory.c_str(), ii.kind.c_str(), build_s, ii.file_bytes / 1e6, ii.bytes_per_item, rss_gb(),
                  k_factor > 0 ? k_factor : ii.k_factor);
      std::fflush(stdout);
      std::map<std::string, int> names;
      std::vector<int> qlab;
      for (auto& l : q.labels) qlab.push_back(label_index(names, l));

      // Exact search: the ground truth.
      const SearchParams exact{.exact = true};
      t0 = now_s();
      auto truth = m.search(q.x.data(), q.n, k, {}, threads, &exact);
      const double exact_batch = now_s() - t0;
      std::vector<double> ones;
      for (int i = 0; i < std::min<int64_t>(big ? 2 : singles, q.n); ++i) {
        t0 = now_s();
        (void)m.search(q.x.data() + static_cast<size_t>(i) * d, 1, k, {}, threads, &exact);
        ones.push_back((now_s() - t0) * 1e3);
      }
      auto exact_pred = predictions(truth, k_vote, names);
      std::vector<std::unordered_set<int64_t>> tset;
      for (auto& nn : truth) {
        std::unordered_set<int64_t> s;
        for (auto& x : nn) s.insert(x.seq);
        tset.push_back(std::move(s));
      }
      auto score = [&](const std::vector<std::vector<Neighbor>>& res, Run& r) {
        int64_t hit = 0, want = 0;
        for (int64_t i = 0; i < q.n; ++i) {
          want += static_cast<int64_t>(tset[i].size());
          for (auto& x : res[i]) hit += tset[i].count(x.seq);
        }
        r.recall = want ? double(hit) / double(want) : 1;
        auto p = predictions(res, k_vote, names);
        for (int v = 0; v < 4; ++v) {
          int64_t same = 0, right = 0;
          for (int64_t i = 0; i < q.n; ++i) {
            same += p[i][v] == exact_pred[i][v];
            right += p[i][v] == qlab[i];
          }
          r.acc_vs_exact[v] = double(same) / q.n;
          r.acc_label[v] = double(right) / q.n;
        }
      };
      std::vector<Run> runs;
      Run ex;
      ex.param = "exact";
      ex.qps = q.n / exact_batch;
      ex.single_ms = median(ones);
      score(truth, ex);
      runs.push_back(ex);

      std::vector<int> values;
      for (auto& v : split(values_arg, ',')) values.push_back(std::stoi(v));
      if (values.empty()) {
        if (ii.kind == "ivf")
          for (int v = 1; v <= std::min<int64_t>(ii.nlist, 128); v *= 2) values.push_back(v);
        else if (ii.kind == "hnsw")
          for (int v = 16; v <= 512; v *= 2) values.push_back(v);
        else
          values.push_back(0);
      }
      // The same FAISS index, searched directly (k neighbors, FAISS's own distances).
      std::unique_ptr<FaissIndex> direct = big ? nullptr : FaissIndex::read(ii.file);
      std::vector<Run> direct_runs;
      for (int v : values) {
        SearchParams sp;
        sp.k_factor = k_factor;  // 0: the default (4 for compressed codes, else 2)
        if (ii.kind == "ivf") sp.nprobe = v;
        if (ii.kind == "hnsw") sp.ef = v;
        (void)m.search(q.x.data(), std::min<int64_t>(q.n, 8), k, {}, threads, &sp);  // warm-up (loads the index)
        Run r;
        r.param = ii.kind == "ivf" ? "nprobe" : ii.kind == "hnsw" ? "ef" : "index";
        r.value = v;
        t0 = now_s();
        auto res = m.search(q.x.data(), q.n, k, {}, threads, &sp);
        r.qps = q.n / (now_s() - t0);
        ones.clear();
        for (int i = 0; i < std::min<int64_t>(singles, q.n); ++i) {
          t0 = now_s();
          (void)m.search(q.x.data() + static_cast<size_t>(i) * d, 1, k, {}, threads, &sp);
          ones.push_back((now_s() - t0) * 1e3);
        }
        r.single_ms = median(ones);
        score(res, r);
        runs.push_back(r);
        if (direct) {
          FaissIndex::Params fp{sp.nprobe, sp.ef};
          std::vector<float> dd(static_cast<size_t>(q.n) * k);
          std::vector<int64_t> dk(static_cast<size_t>(q.n) * k);
          direct->search(q.n, q.x.data(), k, dd.data(), dk.data(), fp, threads);  // warm-up
          Run f = r;
          t0 = now_s();
          direct->search(q.n, q.x.data(), k, dd.data(), dk.data(), fp, threads);
          f.qps = q.n / (now_s() - t0);
          ones.clear();
          for (int i = 0; i < std::min<int64_t>(singles, q.n); ++i) {
            t0 = now_s();
            direct->search(1, q.x.data() + static_cast<size_t>(i) * d, k, dd.data(), dk.data(), fp, threads);
            ones.push_back((now_s() - t0) * 1e3);
          }
          f.single_ms = median(ones);
          // Rows -> insertion sequences (rows are in insertion order in a memory never compacted: seq = row + 1).
          int64_t hit = 0, want = 0;
          for (int64_t i = 0; i < q.n; ++i) {
            want += static_cast<int64_t>(tset[i].size());
            for (int j = 0; j < k; ++j) hit += dk[i * k + j] >= 0 && tset[i].count(dk[i * k + j] + 1);
          }
          f.recall = want ? double(hit) / double(want) : 1;
          direct_runs.push_back(f);
        }
      }
      std::printf("| search | recall@%d | queries/s (batch of %lld) | x exact | ms/query (single) | x exact |"
                  " same prediction as exact (plurality/distance/softmax/rank, k=%d) | accuracy vs label (4 rules) |\n",
                  k, static_cast<long long>(q.n), k_vote);
      std::printf("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n");
      for (const Run& r : runs) {
        const std::string what = r.param == "exact" ? "exact" : r.param + "=" + std::to_string(r.value);
        std::printf("| %s | %.4f | %.1f | %.1fx | %.2f | %.1fx | %.3f / %.3f / %.3f / %.3f | %.3f / %.3f / %.3f / %.3f |\n",
                    what.c_str(), r.recall, r.qps, r.qps / runs[0].qps, r.single_ms,
                    r.single_ms > 0 ? runs[0].single_ms / r.single_ms : 0, r.acc_vs_exact[0], r.acc_vs_exact[1],
                    r.acc_vs_exact[2], r.acc_vs_exact[3], r.acc_label[0], r.acc_label[1], r.acc_label[2],
                    r.acc_label[3]);
      }
      if (!direct_runs.empty()) {
        std::printf("\nThe same FAISS index searched directly (k = %d, FAISS distances, no re-scoring) against the memory's search above:\n\n", k);
        std::printf("| search | FAISS recall@%d | FAISS queries/s | memory / FAISS queries/s | FAISS ms/query | memory / FAISS ms |\n", k);
        std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (size_t i = 0; i < direct_runs.size(); ++i) {
          const Run& f = direct_runs[i];
          const Run& r = runs[i + 1];
          const std::string what = f.param + "=" + std::to_string(f.value);
          std::printf("| %s | %.4f | %.1f | %.3f | %.2f | %.3f |\n", what.c_str(), f.recall, f.qps, r.qps / f.qps,
                      f.single_ms, r.single_ms / f.single_ms);
        }
      }
      std::fflush(stdout);
      // Whole processes: one `vismem classify` (open, load the index, search, vote), then remove with receipt.
      if (fs::exists(cli)) {
        write_npy_f32(dir + "/q1.npy", q.x.data(), {1, d});
        const int pick = values.size() > 2 ? values[values.size() / 2] : values.back();
        std::string opt = ii.kind == "ivf" ? " --nprobe " + std::to_string(pick) : ii.kind == "hnsw" ? " --ef " + std::to_string(pick) : "";
        std::vector<double> tc, te;
        for (int rep = 0; rep < 3; ++rep) {
          t0 = now_s();
          run_process(cli + " classify " + base + " --embeddings " + dir + "/q1.npy --k " + std::to_string(k_vote) + opt + " >/dev/null");
          tc.push_back(now_s() - t0);
          if (!big || rep == 0) {
            t0 = now_s();
            run_process(cli + " classify " + base + " --embeddings " + dir + "/q1.npy --k " + std::to_string(k_vote) + " --exact >/dev/null");
            te.push_back(now_s() - t0);
          }
        }
        std::printf("\n`vismem classify` of 1 query as a whole process (median of 3): %.3f s with the index (%s), %.3f s exact\n",
                    median(tc), opt.c_str(), median(te));
        t0 = now_s();
        const int rc = run_process(cli + " remove " + base + " --id m" + std::to_string(removed_row) + " >/dev/null");
        const double rm_s = now_s() - t0;
        Memory after = Memory::open(base);
        bool gone = !after.contains("m" + std::to_string(removed_row));
        for (int64_t row : after.index_rows()) gone = gone && row != removed_row;  // item m<i> is row i
        removed_row += 1000;  // the next factory removes another item
        std::printf("`vismem remove` of 1 item (scrub of the vector files, a new index file without it, the old one zeroed): "
                    "%.2f s, exit %d, row gone from the index file: %s\n\n",
                    rm_s, rc, gone ? "yes" : "NO");
      }
      std::fflush(stdout);
    }
    if (!keep) Memory::remove_files(base);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ann: %s\n", e.what());
    return 1;
  }
  return 0;
}
