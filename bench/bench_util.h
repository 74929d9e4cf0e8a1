// bench_util.h: what several benchmarks share: random unit vectors (the same
// for any thread count), medians, timing.
//
// Basic usage:
//   std::vector<float> x(n * d);
//   bench::random_rows(0, n, d, /*seed=*/1, x.data());   // rows 0..n-1, uniform in [-1, 1)^d, normalized
//   auto t0 = std::chrono::steady_clock::now(); ...; times.push_back(bench::seconds_since(t0));
//   double m = bench::median(times);
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

namespace bench {

inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Rows [first, first + count) of a random unit-vector matrix of d columns at
// row stride ld (0: d; columns past d are left as they are), seeded by (seed, row).
inline void random_rows(int64_t first, int64_t count, int d, uint64_t seed, float* out, int64_t ld = 0) {
  if (ld == 0) ld = d;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    uint64_t s = seed * 0x100000001b3ull + static_cast<uint64_t>(first + i);
    float* row = out + i * ld;
    double norm2 = 0;
    for (int j = 0; j < d; ++j) {
      const float v = static_cast<float>(static_cast<int64_t>(splitmix(s) >> 40) - (1ll << 23)) / (1 << 23);
      row[j] = v;
      norm2 += double(v) * v;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
    for (int j = 0; j < d; ++j) row[j] *= inv;
  }
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace bench
