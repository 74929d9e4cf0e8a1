// bench_gpu_search: exact top-k search on a CUDA GPU (gpu_search.h) against
// PyTorch's matmul + topk on the same GPU, in one run, and checked against
// the CPU's flat_search bit for bit.
//
// Usage (a build with cmake -DVISMEM_CUDA=ON, on a machine with a GPU; see
// bench/README.md and scripts/device_bundle.sh for a machine without our build deps):
//   bench_gpu_search [--n 500000] [--d 1024] [--k 100] [--batches 1,16,256]
//                    [--reps 20] [--python python3] [--script bench/gpu_torch_search.py]
//                    [--no-torch] [--check 8]
//
// For each batch it prints the median milliseconds per search() call (the
// queries' copy to the GPU, the scan, the reduction and the results' copy
// back: what a caller waits for) both ways the GPU path has (the fused scan;
// scores then selection), the best queries/s, the same for torch (float32
// matmul with TF32 off, then topk, queries copied in and results out; run by
// bench/gpu_torch_search.py on its own random rows of the same shape, since
// the time does not depend on the values) and the ratio torch ms / ours ms
// (above 1: ours is faster) for each way. `check` compares the first --check
// queries of every batch with flat_search on the CPU (all cores): keys and
// distance bits must be equal, both ways. Exit status: 0, 1 on a mismatch, 2 where no GPU is usable.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cpu.h"
#include "error.h"
#include "flat_index.h"
#include "gpu_search.h"
#include "bench_util.h"

namespace {

using bench::median;
using bench::seconds_since;

// torch's median ms per batch, from the script's "batch B ms M" lines; empty if it failed.
std::map<int, double> run_torch(const std::string& python, const std::string& script, int64_t n, int d, int k,
                                const std::vector<int>& batches, int reps) {
  std::string list;
  for (int b : batches) list += (list.empty() ? "" : ",") + std::to_string(b);
  const std::string cmd = python + " " + script + " --n " + std::to_string(n) + " --d " + std::to_string(d) +
                          " --k " + std::to_string(k) + " --batches " + list + " --reps " + std::to_string(reps);
  std::map<int, double> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    int b = 0;
    double ms = 0;
    if (std::sscanf(line, "batch %d ms %lf", &b, &ms) == 2)
      out[b] = ms;
    else
      std::printf("torch: %s", line);
  }
  if (pclose(p) != 0) std::printf("torch: the script failed (%s)\n", cmd.c_str());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"exact top-k search on a CUDA GPU vs torch matmul + topk"};
  int64_t n = 500000;
  int d = 1024, k = 100, reps = 20, check_n = 8;
  std::vector<int> batches = {1, 16, 256};
  std::string python = "python3", script = "bench/gpu_torch_search.py";
  bool no_torch = false;
  app.add_option("--n", n, "rows")->check(CLI::PositiveNumber);
  app.add_option("--d", d, "columns")->check(CLI::PositiveNumber);
  app.add_option("--k", k, "neighbors")->check(CLI::Range(1, vismem::GpuFlatSearch::kMaxK));
  app.add_option("--batches", batches, "queries per search() call")->delimiter(',');
  app.add_option("--reps", reps, "timed calls per batch (median)")->check(CLI::PositiveNumber);
  app.add_option("--check", check_n, "queries per batch compared with the CPU bit for bit")->check(CLI::NonNegativeNumber);
  app.add_option("--python", python, "the interpreter with torch");
  app.add_option("--script", script, "the torch anchor");
  app.add_flag("--no-torch", no_torch, "ours only");
  CLI11_PARSE(app, argc, argv);

  std::printf("cpu: %s\n", vismem::cpu_description().c_str());
  std::string why;
  if (!vismem::gpu_search_available(&why)) {
    std::printf("no GPU search here: %s\n", why.c_str());
    return 2;
  }
  try {
    const int ld = vismem::flat_row_stride(d);
    std::vector<float> x(size_t(n) * ld, 0.0f);
    bench::random_rows(0, n, d, 1, x.data(), ld);
    std::vector<int64_t> keys(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) keys[size_t(i)] = i;
    vismem::FlatRows rows;
    rows.x = x.data();
    rows.keys = keys.data();
    rows.n = n;
    rows.max_norm = 1.0 + 1e-5;

    auto t0 = std::chrono::steady_clock::now();
    vismem::GpuFlatSearch gpu(rows, d);
    const double upload = seconds_since(t0);
    std::printf("gpu: %s; N = %lld, d = %d (%.2f GB float32), k = %d; rows copied in %.2f s\n", gpu.device().c_str(),
                static_cast<long long>(n), d, double(n) * ld * 4 / 1e9, k, upload);

    std::map<int, double> torch_ms;
    if (!no_torch) torch_ms = run_torch(python, script, n, d, k, batches, reps);

    std::printf("\n%6s %10s %10s %10s %10s %8s %8s %s\n", "batch", "fused ms", "scores ms", "torch ms", "best q/s",
                "fused", "scores", "check vs CPU (both ways)");
    bool all_same = true;
    for (int b : batches) {
      std::vector<float> q(size_t(b) * d), dist(size_t(b) * k);
      std::vector<int64_t> got(size_t(b) * k);
      std::vector<float> qp(size_t(b) * ld);
      bench::random_rows(0, b, d, 1000 + b, qp.data(), ld);
      for (int i = 0; i < b; ++i) std::copy(qp.begin() + i * ld, qp.begin() + i * ld + d, q.begin() + i * d);
      // The CPU's answer for the first check_n queries.
      const int c = std::min(b, check_n);
      std::vector<float> cd(size_t(c) * k);
      std::vector<int64_t> ck(size_t(c) * k);
      if (c > 0) vismem::flat_search(rows, d, vismem::FlatIndex::Options{}, c, q.data(), k, cd.data(), ck.data());
      double ms[2];
      bool same = true;
      for (int way = 0; way < 2; ++way) {  // 0: the fused scan, 1: scores + selection
        gpu.set_fused_max_batch(way == 0 ? 1 << 30 : 0);
        for (int w = 0; w < 3; ++w) gpu.search(b, q.data(), k, dist.data(), got.data());
        std::vector<double> t;
        for (int r = 0; r < reps; ++r) {
          t0 = std::chrono::steady_clock::now();
          gpu.search(b, q.data(), k, dist.data(), got.data());
          t.push_back(seconds_since(t0));
        }
        ms[way] = median(t) * 1e3;
        same = same && std::equal(ck.begin(), ck.end(), got.begin()) &&
               std::memcmp(cd.data(), dist.data(), cd.size() * sizeof(float)) == 0;
      }
      all_same = all_same && same;
      const std::string verdict =
          c == 0 ? "-" : std::string(same ? "identical" : "MISMATCH") + " (" + std::to_string(c) + " queries)";
      const double best = std::min(ms[0], ms[1]);
      const auto it = torch_ms.find(b);
      if (it != torch_ms.end())
        std::printf("%6d %10.3f %10.3f %10.3f %10.1f %7.2fx %7.2fx %s\n", b, ms[0], ms[1], it->second, b / best * 1e3,
                    it->second / ms[0], it->second / ms[1], verdict.c_str());
      else
        std::printf("%6d %10.3f %10.3f %10s %10.1f %8s %8s %s\n", b, ms[0], ms[1], "-", b / best * 1e3, "-", "-",
                    verdict.c_str());
    }
    std::printf("\nms: median wall time of one search() call (queries in, results out); fused: every query's rows\n"
                "scored and sorted on chip; scores: the batch's scores in GPU memory, then the selection (the\n"
                "default above %d queries); the ratio columns: torch ms / that way's ms.\n", 2);
    return all_same ? 0 : 1;
  } catch (const vismem::Error& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
