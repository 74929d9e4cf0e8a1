// bench_scale: the memory at ImageNet scale, whole commands, vismem beside
// FAISS (IndexFlatIP written with write_index, then read_index + search), in
// one run on the same data and machine.
//
// Usage:
//   bench_scale [--n 1281167] [--d 1024,384] [--clusters 1000] [--reps 3]
//               [--dir /tmp/vismem_scale] [--vismem build/vismem] [--f16] [--keep]
//
// Data: n clustered float32 vectors (cluster centers uniform in [-1, 1)^d,
// points = center + noise of the same scale, label = cluster), written as an
// .npy in chunks; 256 + 1 query points drawn the same way. Each step runs as
// a separate process (the cost a user sees: start, open, work, exit) and is
// timed wall clock; peak RSS comes from wait4(). Medians of --reps runs after
// one warm-up run (the files are then in the page cache for both sides).
//   add     vismem add --embeddings X.npy          | FAISS: IndexFlatIP.add in chunks + write_index
//   info    vismem info                             | -
//   classify 1 query, k = 20 (exact)                | read_index + search(1, k = 20)
//   classify with the float16 copy (--f16)          | -
//   search  256 queries, k = 100, neighbor file     | read_index + search(256, k = 100)
//   remove  1 id, with its scrub                    | -
// The ratio column is FAISS time / vismem time (> 1: vismem faster).
#include <faiss/IndexFlat.h>
#include <faiss/index_io.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "npy.h"

namespace fs = std::filesystem;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
float uniform(uint64_t& s) { return static_cast<float>(splitmix(s) >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f; }

struct Run {
  double seconds = 0;
  double rss_gb = 0;
  int status = 0;
};

// Runs argv as a child process; wall time and peak RSS.
Run run(const std::vector<std::string>& args, bool quiet = true) {
  double t0 = now_s();
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    if (quiet) {
      FILE* f = std::freopen("/dev/null", "w", stdout);
      (void)f;
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int st = 0;
  struct rusage ru {};
  wait4(pid, &st, 0, &ru);
  Run r;
  r.seconds = now_s() - t0;
  r.rss_gb = ru.ru_maxrss / 1e6;  // kB -> GB
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (r.status != 0) {
    std::string cmd;
    for (auto& a : args) cmd += a + " ";
    throw std::runtime_error("command failed (" + std::to_string(r.status) + "): " + cmd);
  }
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Clustered points, n x d, streamed into an .npy (row i depends only on (seed, i)).
void write_points(const std::string& path, int64_t n, int d, int clusters, uint64_t seed, const std::string& labels_path) {
  std::vector<float> centers(static_cast<size_t>(clusters) * d);
  uint64_t s = 12345;
  for (auto& c : centers) c = uniform(s);
  // Header for (n, d) float32, then rows in chunks.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(n) + ", " + std::to_string(d) + "), }";
  size_t total = 10 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = static_cast<uint16_t>(dict.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  std::ofstream lf;
  if (!labels_path.empty()) lf.open(labels_path);
  const int64_t chunk = 8192;
  std::vector<float> buf;
  for (int64_t i0 = 0; i0 < n; i0 += chunk) {
    const int64_t m = std::min(chunk, n - i0);
    buf.resize(static_cast<size_t>(m * d));
    for (int64_t i = 0; i < m; ++i) {
      uint64_t r = seed * 0x100000001b3ull + static_cast<uint64_t>(i0 + i);
      const int c = static_cast<int>(splitmix(r) % clusters);
      for (int j = 0; j < d; ++j) buf[i * d + j] = centers[static_cast<size_t>(c) * d + j] + uniform(r);
      if (lf.is_open()) lf << "c" << c << "\n";
    }
    f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size() * 4));
  }
  if (!f) throw std::runtime_error("cannot write " + path);
}

// The FAISS side of one measurement, run in a child process: read_index + search.
int faiss_child(const std::string& index, const std::string& queries, int k) {
  std::unique_ptr<faiss::Index> idx(faiss::read_index(index.c_str()));
  vismem::NpyArray q = vismem::read_npy(queries);
  std::vector<float> x = q.to_float();
  const int64_t nq = q.shape[0];
  std::vector<float> dist(static_cast<size_t>(nq * k));
  std::vector<faiss::Index::idx_t> lab(static_cast<size_t>(nq * k));
  idx->search(nq, x.data(), k, dist.data(), lab.data());
  std::printf("%lld\n", static_cast<long long>(lab[0]));
  return 0;
}

void faiss_build(const std::string& npy, const std::string& index, int d) {
  faiss::IndexFlatIP idx(d);
  // Stream the .npy (row-normalized like vismem does, so both search the same vectors).
  std::ifstream f(npy, std::ios::binary);
  char pre[10];
  f.read(pre, 10);
  uint16_t hl;
  std::memcpy(&hl, pre + 8, 2);
  f.seekg(10 + hl);
  const int64_t chunk = 65536;
  std::vector<float> buf(static_cast<size_t>(chunk * d));
  for (;;) {
    f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size() * 4));
    const int64_t m = f.gcount() / 4 / d;
    if (m == 0) break;
    for (int64_t i = 0; i < m; ++i) {
      double ss = 0;
      for (int j = 0; j < d; ++j) ss += static_cast<double>(buf[i * d + j]) * buf[i * d + j];
      const double inv = 1.0 / std::sqrt(ss);
      for (int j = 0; j < d; ++j) buf[i * d + j] = static_cast<float>(buf[i * d + j] * inv);
    }
    idx.add(m, buf.data());
  }
  faiss::write_index(&idx, index.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--faiss-child") return faiss_child(argv[2], argv[3], std::atoi(argv[4]));
  CLI::App app{"bench_scale: whole commands at ImageNet scale, vismem vs FAISS read_index + search"};
  int64_t n = 1281167;
  std::vector<int> dims = {1024, 384};
  int clusters = 1000, reps = 3;
  std::string dir = "/tmp/vismem_scale", vismem_bin;
  bool f16 = false, keep = false;
  app.add_option("--n", n, "Items");
  app.add_option("--d", dims, "Dimensions")->delimiter(',');
  app.add_option("--clusters", clusters, "Clusters (labels)");
  app.add_option("--reps", reps, "Timed runs per step (after one warm-up)");
  app.add_option("--dir", dir, "Scratch folder (needs about 4.5 * n * d bytes)");
  app.add_option("--vismem", vismem_bin, "The vismem binary (default: beside this program)");
  app.add_flag("--f16", f16, "Also measure a memory with the float16 copy");
  app.add_flag("--keep", keep, "Keep the scratch files");
  CLI11_PARSE(app, argc, argv);
  const std::string self = fs::canonical("/proc/self/exe").string();
  if (vismem_bin.empty()) vismem_bin = (fs::path(self).parent_path() / "vismem").string();
  try {
    fs::create_directories(dir);
    for (int d : dims) {
      const std::string X = dir + "/x.npy", L = dir + "/labels.txt", Q1 = dir + "/q1.npy", Q256 = dir + "/q256.npy";
      const std::string mem = dir + "/mem.db", mem16 = dir + "/mem16.db", fidx = dir + "/flat.faiss";
      std::printf("== n = %lld, d = %d: %.2f GB of float32 ==\n", static_cast<long long>(n), d, n * d * 4 / 1e9);
      std::fflush(stdout);
      double t0 = now_s();
      write_points(X, n, d, clusters, 1, L);
      write_points(Q1, 1, d, clusters, 2, "");
      write_points(Q256, 256, d, clusters, 3, "");
      std::printf("data written in %.1f s\n", now_s() - t0);
      for (const std::string& m : {mem, mem16})
        for (const char* s : {"", "-wal", "-shm", ".vec", ".f16", ".keys", ".lock"}) fs::remove(m + s);
      fs::remove(fidx);

      run({vismem_bin, "create", mem, "--dim", std::to_string(d)});
      Run add = run({vismem_bin, "add", mem, "--embeddings", X, "--labels", L});
      t0 = now_s();
      faiss_build(X, fidx, d);
      const double faiss_add = now_s() - t0;
      Run add16;
      auto timed = [&](const std::vector<std::string>& args, double* rss = nullptr) {
        run(args);  // warm-up
        std::vector<double> t, r;
        for (int i = 0; i < reps; ++i) {
          Run x = run(args);
          t.push_back(x.seconds);
          r.push_back(x.rss_gb);
        }
        if (rss) *rss = median(r);
        return median(t);
      };
      const std::string fk = std::to_string(20);
      double info_rss = 0, cls_rss = 0;
      double info = timed({vismem_bin, "info", mem}, &info_rss);
      double cls = timed({vismem_bin, "classify", mem, "--embeddings", Q1, "--k", "20", "--json"}, &cls_rss);
      double f_cls = timed({self, "--faiss-child", fidx, Q1, "20"});
      double srch = timed({vismem_bin, "search", mem, "--embeddings", Q256, "--k", "100", "--out", dir + "/nn.json"});
      double f_srch = timed({self, "--faiss-child", fidx, Q256, "100"});
      std::vector<double> rm;
      for (int i = 0; i < reps; ++i) rm.push_back(run({vismem_bin, "remove", mem, "--id", "x.npy#" + std::to_string(i * 7919)}).seconds);
      // The float16 copy in a memory of its own, measured after the f32 one
      // and the FAISS file are gone (all of them at once would not fit this
      // machine's page cache at d = 1024, and timings would read the disk).
      double cls16 = 0;
      if (f16) {
        for (const char* s : {"", "-wal", "-shm", ".vec", ".f16", ".keys", ".lock"}) fs::remove(mem + s);
        fs::remove(fidx);
        run({vismem_bin, "create", mem16, "--dim", std::to_string(d), "--f16"});
        add16 = run({vismem_bin, "add", mem16, "--embeddings", X, "--labels", L});
        cls16 = timed({vismem_bin, "classify", mem16, "--embeddings", Q1, "--k", "20", "--json"});
      }
      const double vec_gb = n * d * 4 / 1e9;
      std::printf("| step | vismem | FAISS | FAISS / vismem |\n| --- | --- | --- | --- |\n");
      std::printf("| add (%.2f GB .npy) | %.1f s, peak RSS %.2f GB (%.2fx the vectors) | %.1f s (add + write_index) | %.2f |\n",
                  vec_gb, add.seconds, add.rss_gb, add.rss_gb / vec_gb, faiss_add, faiss_add / add.seconds);
      if (f16)
        std::printf("| add with float16 copy | %.1f s, peak RSS %.2f GB | - | - |\n", add16.seconds, add16.rss_gb);
      std::printf("| info | %.3f s, RSS %.3f GB | - | - |\n", info, info_rss);
      std::printf("| classify 1 query, whole process | %.3f s (RSS %.2f GB) | %.3f s | %.1fx |\n", cls, cls_rss, f_cls,
                  f_cls / cls);
      if (f16) std::printf("| classify 1 query, float16 copy | %.3f s | %.3f s | %.1fx |\n", cls16, f_cls, f_cls / cls16);
      std::printf("| search 256 queries, k = 100 | %.3f s | %.3f s | %.2fx |\n", srch, f_srch, f_srch / srch);
      std::printf("| remove 1 id + scrub, whole process | %.3f s | - | - |\n", median(rm));
      std::fflush(stdout);
      if (!keep)
        for (const std::string& f : {X, L, Q1, Q256, fidx, dir + "/nn.json"}) fs::remove(f);
      if (!keep)
        for (const std::string& m : {mem, mem16})
          for (const char* s : {"", "-wal", "-shm", ".vec", ".f16", ".keys", ".lock"}) fs::remove(m + s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
