// bench_search_call: the C++ side of bench/bench_python.py. Times
// Memory::search called directly, one query at a time and as one batch, on a
// memory and a query file, and prints JSON (medians) for the Python script to
// set against the same calls made through `import vismem`.
//
//   bench_search_call MEMORY.db QUERIES.npy [--k 100] [--single 200] [--batch 1024] [--reps 5] [--threads 0]
//   -> {"single_us": median per single-query call, "batch_ms": median per batch call, *_min_*: fastest, ...}
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "error.h"
#include "memory.h"
#include "npy.h"
#include "bench_util.h"

using namespace vismem;

namespace {
using bench::median;
using bench::seconds_since;
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bench_search_call MEMORY.db QUERIES.npy [--k 100] [--single 200] [--batch 1024] [--reps 5] "
                 "[--threads 0]\n");
    return 2;
  }
  int k = 100, single = 200, batch = 1024, reps = 5, threads = 0;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--k")) k = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--single")) single = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  }
  try {
    Memory mem = Memory::open(argv[1]);
    NpyArray a = read_npy(argv[2]);
    std::vector<float> q = a.to_float();
    const int d = mem.dim();
    const int64_t nq = static_cast<int64_t>(q.size()) / d;
    if (a.shape.size() != 2 || a.shape[1] != d || nq < std::max(single, batch))
      throw Error(std::string(argv[2]) + ": need at least max(single, batch) rows of dimension " + std::to_string(d));
    mem.search(q.data(), batch, k, {}, threads);  // warm up (allocations, caches, BLAS threads)
    std::vector<double> one;
    for (int r = 0; r < reps; ++r)
      for (int i = 0; i < single; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        auto res = mem.search(q.data() + static_cast<int64_t>(i) * d, 1, k, {}, threads);
        one.push_back(seconds_since(t0));
        if (res.size() != 1) return 1;
      }
    std::vector<double> many;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      auto res = mem.search(q.data(), batch, k, {}, threads);
      many.push_back(seconds_since(t0));
      if (static_cast<int>(res.size()) != batch) return 1;
    }
    std::printf("{\"items\": %lld, \"dim\": %d, \"k\": %d, \"threads\": %d, \"single_us\": %.3f, "
                "\"single_min_us\": %.3f, \"batch\": %d, \"batch_ms\": %.3f, \"batch_min_ms\": %.3f}\n",
                static_cast<long long>(mem.size()), d, k, threads, 1e6 * median(one),
                1e6 * *std::min_element(one.begin(), one.end()), batch, 1e3 * median(many),
                1e3 * *std::min_element(many.begin(), many.end()));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
