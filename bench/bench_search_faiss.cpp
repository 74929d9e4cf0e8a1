// bench_search_faiss: exact top-k search, vismem vs faiss::IndexFlatIP, on the
// same random unit vectors, same thread count, in one run, against this
// machine's memory bandwidth measured in the same run.
//
// Usage:
//   bench_search_faiss [--n 500000] [--d 1024] [--batches 1,16,256]
//                      [--threads T] [--reps 5] [--k 100] [--scan automatic]
//
// For each (d, batch) it prints the median queries/s of
//   ours f32:  flat_search() over the float32 rows (what FlatIndex::search
//              and the store run), kernels chosen at run time (cpu_isa());
//   ours f16:  the same with the float16 copy (batches <= 8 scan it; larger
//              ones are compute bound and scan float32);
//   FAISS:     IndexFlatIP::search on its own copy of the rows;
//   bound:     batch / (seconds to stream the float32 rows once): a plain
//              vectorized sum over the same bytes on the same threads, each
//              thread its own contiguous share of the rows, as the scan
//              splits them (and the float16 copy's bound for ours f16);
// and the ratios: ours / FAISS, ours / bound, f16 / f32. Measurements rotate
// (FAISS, ours f32, ours f16, stream f32, stream f16) within each repetition
// so machine noise hits all alike; a search of one pass over the matrix
// serves a whole batch, so the bound scales with the batch until compute
// dominates. recall@k: |ours ∩ FAISS| / k per query, averaged (1.0 up to ties
// and FAISS's own float rounding); ours f16 must be bit-identical to ours f32.
//
// Threads: FAISS parallelizes its heaps with OpenMP and its sgemm with
// OpenBLAS's threads, so it runs with omp and BLAS threads = T. Ours runs its
// own T threads with BLAS single-threaded inside them (set_blas_threads(1)),
// the configuration flat_index.h recommends. The OpenBLAS core in use is
// printed (it decides FAISS's sgemm speed).
#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>
#include <immintrin.h>
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

#include "cpu.h"
#include "flat_index.h"
#include "linalg.h"
#include "bench_util.h"

extern "C" char* openblas_get_corename(void);

namespace {

using bench::random_rows;

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


// Sum of n 32-bit words: every byte read once, the least work per byte.
__attribute__((target("avx2"))) uint32_t sum_words_avx2(const uint32_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_epi32(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi32(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a2 = _mm256_add_epi32(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 16)));
    a3 = _mm256_add_epi32(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 24)));
  }
  alignas(32) uint32_t lane[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane),
                     _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
  uint32_t s = 0;
  for (uint32_t v : lane) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}
uint32_t sum_words(const uint32_t* p, int64_t n) {
  if (vismem::cpu_isa() != vismem::Isa::portable) return sum_words_avx2(p, n);
  __m128i a0 = _mm_setzero_si128(), a1 = a0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 = _mm_add_epi32(a0, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_add_epi32(a1, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 4)));
  }
  alignas(16) uint32_t lane[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lane), _mm_add_epi32(a0, a1));
  uint32_t s = lane[0] + lane[1] + lane[2] + lane[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

// One streaming read of rows * row_bytes bytes on `threads` threads, each
// reading rows [rows * t / T, rows * (t + 1) / T) as the scan splits them.
uint32_t stream_read(const void* base, int64_t rows, int64_t row_bytes, int threads) {
  uint32_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    const char* p = static_cast<const char*>(base) + r0 * row_bytes;
    total += sum_words(reinterpret_cast<const uint32_t*>(p), (r1 - r0) * row_bytes / 4);
  }
  return total;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Exact top-k search: vismem vs faiss::IndexFlatIP and the memory bandwidth bound"};
  int64_t n = 500000;
  std::vector<int> dims = {1024};
  std::vector<int64_t> batches = {1, 16, 256};
  std::string scan = "automatic";
  int threads = vismem::default_threads(), reps = 5, k = 100;
  app.add_option("--n", n, "database size");
  app.add_option("--d", dims, "dimensions")->delimiter(',');
  app.add_option("--batches", batches, "query batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "threads for all")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "repetitions per measurement (median)")->check(CLI::PositiveNumber);
  app.add_option("--k", k, "neighbors per query");
  app.add_option("--scan", scan, "our scan: automatic, kernel, blas");
  CLI11_PARSE(app, argc, argv);

  vismem::FlatIndex::Options opt;
  opt.scan = scan == "blas"     ? vismem::FlatIndex::Scan::blas
             : scan == "kernel" ? vismem::FlatIndex::Scan::kernel
                                : vismem::FlatIndex::Scan::automatic;
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  std::printf("%s\n", vismem::cpu_description().c_str());
  std::printf("N=%lld k=%d threads=%d reps=%d scan=%s, OpenBLAS core: %s\n", static_cast<long long>(n), k, threads,
              reps, scan.c_str(), openblas_get_corename());
  std::printf("%5s %6s %10s %10s %10s %7s %10s %9s %10s %9s %9s %8s %s\n", "d", "batch", "f32 q/s", "f16 q/s",
              "faiss q/s", "f32/fai", "bound q/s", "f32/bnd", "bnd16 q/s", "f16/bnd", "f16/f32", "recall", "f16 vs f32");

  for (int d : dims) {
    std::vector<float> q(static_cast<size_t>(max_batch * d));
    random_rows(0, max_batch, d, /*seed=*/2, q.data());
    // Our rows in flat_search()'s layout (as the store maps them), the
    // float16 copy beside them, and FAISS's own copy.
    const int ld = vismem::flat_row_stride(d);
    std::vector<float> x(static_cast<size_t>(n * ld), 0.0f);
    std::vector<uint16_t> half(static_cast<size_t>(n * ld), 0);
    std::vector<int64_t> keys(static_cast<size_t>(n));
    faiss::IndexFlatIP faiss_index(d);
    fill(n, d, /*seed=*/1, [&](int64_t first, int64_t m, const float* rows) {
      faiss_index.add(m, rows);
      for (int64_t i = 0; i < m; ++i) {
        std::memcpy(x.data() + (first + i) * ld, rows + i * d, sizeof(float) * d);
        vismem::flat_to_half(rows + i * d, half.data() + (first + i) * ld, d);
        keys[first + i] = first + i;
      }
    });
    vismem::FlatRows f32{x.data(), nullptr, keys.data(), n, 1.0 + 1e-5};
    vismem::FlatRows f16 = f32;
    f16.half = half.data();
    vismem::FlatIndex::Options f16_opt = opt;
    f16_opt.storage = vismem::FlatIndex::Storage::f16;

    std::vector<double> all_s32, all_s16;
    for (int64_t b : batches) {
      std::vector<float> dist32(static_cast<size_t>(b * k)), dist16(dist32.size()), distf(dist32.size());
      std::vector<int64_t> key32(static_cast<size_t>(b * k)), key16(key32.size()), keyf(key32.size());
      std::vector<double> t_faiss, t32, t16, s32, s16;
      uint32_t sink = 0;
      for (int r = 0; r < reps; ++r) {
        double t0 = now();
        omp_set_num_threads(threads);
        vismem::set_blas_threads(threads);
        faiss_index.search(b, q.data(), k, distf.data(), keyf.data());
        t_faiss.push_back(now() - t0);
        vismem::set_blas_threads(1);
        t0 = now();
        vismem::flat_search(f32, d, opt, b, q.data(), k, dist32.data(), key32.data(), threads);
        t32.push_back(now() - t0);
        t0 = now();
        vismem::flat_search(f16, d, f16_opt, b, q.data(), k, dist16.data(), key16.data(), threads);
        t16.push_back(now() - t0);
        t0 = now();
        sink += stream_read(x.data(), n, ld * 4, threads);
        s32.push_back(now() - t0);
        t0 = now();
        sink += stream_read(half.data(), n, ld * 2, threads);
        s16.push_back(now() - t0);
      }
      all_s32.insert(all_s32.end(), s32.begin(), s32.end());
      all_s16.insert(all_s16.end(), s16.begin(), s16.end());
      const double q32 = b / median(t32), q16 = b / median(t16), qf = b / median(t_faiss);
      const double bnd32 = b / median(s32), bnd16 = b / median(s16);
      const bool same = key16 == key32 && std::memcmp(dist16.data(), dist32.data(), dist32.size() * 4) == 0;
      volatile uint32_t keep = sink;  // the streamed sums must not be optimized away
      (void)keep;
      std::printf("%5d %6lld %10.2f %10.2f %10.2f %7.2f %10.2f %9.2f %10.2f %9.2f %9.2f %8.4f %s\n", d,
                  static_cast<long long>(b), q32, q16, qf, q32 / qf, bnd32, q32 / bnd32, bnd16, q16 / bnd16,
                  q16 / q32, recall(keyf, key32, b, k), same ? "bit-identical" : "DIFFERENT");
      std::fflush(stdout);
    }
    std::printf("streaming read, median over all batches: float32 rows %.1f GB/s, float16 copy %.1f GB/s\n",
                n * ld * 4.0 / median(all_s32) / 1e9, n * ld * 2.0 / median(all_s16) / 1e9);
  }
  return 0;
}
