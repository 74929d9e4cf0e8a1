// bench_search_faiss: exact top-k search, vismem::FlatIndex vs faiss::IndexFlatIP,
// on the same random unit vectors, same thread count, in one run.
//
// Usage:
//   bench_search_faiss [--n 1281167] [--d 384,1024] [--batches 1,16,256,4096]
//                      [--threads T] [--reps 3] [--k 100] [--storage f32,f16]
//                      [--scan automatic[,kernel,blas]] [--max-seconds 20]
//
// For each (d, batch) it prints the median queries/s of ours and of FAISS, the
// ratio, and both as a fraction of this machine's bound for that batch:
// min(bandwidth bound = batch * 26e9 / (N * d * bytes), sgemm bound =
// 95e9 / (2 * N * d)). One pass over the matrix serves a whole batch.
// Repetitions stop early once a measurement has used --max-seconds (at least
// one always runs), so batch 4096 at full size is timed once.
// recall@k: |ours ∩ FAISS| / k per query, averaged (1.0 up to ties and FAISS's
// own float rounding). Other rows of ours also report recall and bit-identity
// vs our first row (f32, first scan): all must be bit-identical.
// The OpenBLAS core in use is printed: 0.3.21 detects this Xeon as "Prescott"
// (SSE3 sgemm); OPENBLAS_CORETYPE=SkylakeX in the environment selects the
// AVX-512 kernels (affects FAISS's sgemm and our Scan::blas).
//
// Threads: FAISS parallelizes its heaps with OpenMP and its sgemm with
// OpenBLAS's threads, so it runs with omp and BLAS threads = T. Ours runs its
// own T threads with BLAS single-threaded inside them (set_blas_threads(1)),
// the configuration flat_index.h recommends.
#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "flat_index.h"
#include "linalg.h"

extern "C" char* openblas_get_corename(void);

namespace {

constexpr double kBandwidth = 26e9;  // bytes/s, this machine's streaming bandwidth
constexpr double kSgemm = 95e9;      // FLOP/s, this machine's sgemm (all cores)

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Row i of a random unit-vector matrix (uniform in [-1, 1)^d, normalized), the
// same for any thread count: seeded by (seed, i).
void random_rows(int64_t first, int64_t count, int d, uint64_t seed, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    uint64_t s = seed * 0x100000001b3ull + static_cast<uint64_t>(first + i);
    float* row = out + i * d;
    double norm2 = 0;
    for (int j = 0; j < d; ++j) {
      float v = static_cast<float>(static_cast<int64_t>(splitmix(s) >> 40) - (1ll << 23)) / (1 << 23);
      row[j] = v;
      norm2 += double(v) * v;
    }
    float inv = static_cast<float>(1.0 / std::sqrt(norm2));
    for (int j = 0; j < d; ++j) row[j] *= inv;
  }
}

// Fills the indexes chunk by chunk (the full matrix is never held twice more than needed).
void fill(int64_t n, int d, uint64_t seed, const std::function<void(int64_t, int64_t, const float*)>& sink) {
  const int64_t chunk = 65536;
  std::vector<float> buf(static_cast<size_t>(chunk * d));
  for (int64_t i = 0; i < n; i += chunk) {
    int64_t m = std::min(chunk, n - i);
    random_rows(i, m, d, seed, buf.data());
    sink(i, m, buf.data());
  }
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of fn over up to reps runs (stops early past max_seconds).
double median_seconds(const std::function<void()>& fn, int reps, double max_seconds) {
  std::vector<double> t;
  double total = 0;
  for (int r = 0; r < reps && (r == 0 || total < max_seconds); ++r) {
    double t0 = now();
    fn();
    t.push_back(now() - t0);
    total += t.back();
  }
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

double recall(const std::vector<int64_t>& a, const std::vector<int64_t>& b, int64_t nq, int k) {
  double sum = 0;
  for (int64_t i = 0; i < nq; ++i) {
    std::unordered_set<int64_t> s(a.begin() + i * k, a.begin() + (i + 1) * k);
    int hit = 0;
    for (int j = 0; j < k; ++j) hit += s.count(b[i * k + j]) ? 1 : 0;
    sum += double(hit) / k;
  }
  return sum / nq;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Exact top-k search: vismem::FlatIndex vs faiss::IndexFlatIP"};
  int64_t n = 1281167;
  std::vector<int> dims = {384, 1024};
  std::vector<int64_t> batches = {1, 16, 256, 4096};
  std::vector<std::string> storages = {"f32", "f16"};
  std::vector<std::string> scans = {"automatic"};
  int threads = vismem::default_threads(), reps = 3, k = 100;
  double max_seconds = 20;
  app.add_option("--n", n, "database size");
  app.add_option("--d", dims, "dimensions")->delimiter(',');
  app.add_option("--batches", batches, "query batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "threads for both");
  app.add_option("--reps", reps, "repetitions per measurement (median)");
  app.add_option("--k", k, "neighbors per query");
  app.add_option("--storage", storages, "our storages to time: f32, f16")->delimiter(',');
  app.add_option("--scan", scans, "our scans to time: automatic, kernel, blas")->delimiter(',');
  app.add_option("--max-seconds", max_seconds, "stop repeating a measurement after this long");
  CLI11_PARSE(app, argc, argv);

  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  std::printf("N=%lld k=%d threads=%d reps=%d (bounds: %.0f GB/s, %.0f GFLOP/s) OpenBLAS core: %s\n",
              static_cast<long long>(n), k, threads, reps, kBandwidth / 1e9, kSgemm / 1e9, openblas_get_corename());
  std::printf("%5s %6s %8s %11s %11s %7s %11s %9s %9s %8s\n", "d", "batch", "ours", "ours q/s", "faiss q/s",
              "ratio", "bound q/s", "ours/bnd", "faiss/bnd", "recall");

  for (int d : dims) {
    std::vector<float> q(static_cast<size_t>(max_batch * d));
    random_rows(0, max_batch, d, /*seed=*/2, q.data());
    std::vector<std::vector<int64_t>> f32_keys(batches.size());
    std::vector<std::vector<float>> f32_dist(batches.size());
    std::vector<double> faiss_qps(batches.size());
    std::vector<std::vector<int64_t>> faiss_keys(batches.size());

    auto bound = [&](int64_t b, double bytes) {
      double bw = b * kBandwidth / (double(n) * d * bytes);
      double mm = kSgemm / (2.0 * n * d);
      return std::min(bw, mm);
    };

    {  // FAISS first (its own copy of the matrix), then ours per storage.
      faiss::IndexFlatIP faiss_index(d);
      fill(n, d, /*seed=*/1, [&](int64_t, int64_t m, const float* x) { faiss_index.add(m, x); });
      omp_set_num_threads(threads);
      vismem::set_blas_threads(threads);
      for (size_t bi = 0; bi < batches.size(); ++bi) {
        int64_t b = batches[bi];
        std::vector<float> dist(static_cast<size_t>(b * k));
        faiss_keys[bi].resize(static_cast<size_t>(b * k));
        double t = median_seconds([&] { faiss_index.search(b, q.data(), k, dist.data(), faiss_keys[bi].data()); },
                                  reps, max_seconds);
        faiss_qps[bi] = b / t;
      }
    }

    bool first = true;
    for (const std::string& storage : storages)
    for (const std::string& scan : scans) {
      vismem::FlatIndex::Options opt;
      opt.storage = storage == "f16" ? vismem::FlatIndex::Storage::f16 : vismem::FlatIndex::Storage::f32;
      opt.scan = scan == "blas"     ? vismem::FlatIndex::Scan::blas
                 : scan == "kernel" ? vismem::FlatIndex::Scan::kernel
                                    : vismem::FlatIndex::Scan::automatic;
      const std::string label = storage + "/" + scan.substr(0, 4);
      vismem::FlatIndex ours(d, opt);
      ours.reserve(n);
      std::vector<int64_t> keys(65536);
      fill(n, d, /*seed=*/1, [&](int64_t first, int64_t m, const float* x) {
        for (int64_t i = 0; i < m; ++i) keys[i] = first + i;
        ours.add(m, x, keys.data());
      });
      vismem::set_blas_threads(1);
      const double bytes = storage == "f16" ? 2.0 : 4.0;
      for (size_t bi = 0; bi < batches.size(); ++bi) {
        int64_t b = batches[bi];
        // Above 8 queries the f16 copy is not read (compute bound: the float32
        // kernel runs), so those rows would time the f32 path again.
        if (storage == "f16" && b > 8 && !first) continue;
        std::vector<float> dist(static_cast<size_t>(b * k));
        std::vector<int64_t> out(static_cast<size_t>(b * k));
        double t = median_seconds([&] { ours.search(b, q.data(), k, dist.data(), out.data(), threads); }, reps,
                                  max_seconds);
        double qps = b / t, bnd = bound(b, bytes);
        std::printf("%5d %6lld %8s %11.2f %11.2f %7.2f %11.2f %9.2f %9.2f %8.4f", d, static_cast<long long>(b),
                    label.c_str(), qps, faiss_qps[bi], qps / faiss_qps[bi], bnd, qps / bnd,
                    faiss_qps[bi] / bound(b, 4.0), recall(faiss_keys[bi], out, b, k));
        if (first) {
          f32_keys[bi] = out;
          f32_dist[bi] = dist;
        } else {
          bool same = out == f32_keys[bi] &&
                      std::memcmp(dist.data(), f32_dist[bi].data(), dist.size() * sizeof(float)) == 0;
          std::printf("  vs first: recall %.4f, %s", recall(f32_keys[bi], out, b, k),
                      same ? "bit-identical" : "DIFFERENT");
        }
        std::printf("\n");
        std::fflush(stdout);
      }
      first = false;
    }
  }
  return 0;
}
