// bench_vit: images/s of the native DINOv2 ViT-S/14 and ViT-B/14 at 224 px
// (random weights, real shapes), batch 1 and 16, 1 and 2 threads, against the
// sgemm rate of this machine measured in the same run.
//
// Usage: bench_vit [--quick] [--model s|b|all]
//   --quick: fewer repetitions (CI smoke); medians are printed either way.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "fastmath.h"
#include "linalg.h"
#include "vit.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <class F>
double median_seconds(int reps, F&& f) {
  f();  // warm-up: page faults, BLAS buffers
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(t);
}

// Busy CPU seconds of the whole machine (/proc/stat) and of this process:
// their difference over a run is what other processes took, printed so that a
// number measured on a shared machine shows how contended it was.
struct CpuUse {
  double machine = 0, self = 0;
};
CpuUse cpu_use() {
  CpuUse u;
  if (std::FILE* f = std::fopen("/proc/stat", "r")) {
    unsigned long long v[8] = {};
    if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                    &v[6], &v[7]) == 8)
      u.machine = double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / double(sysconf(_SC_CLK_TCK));
    std::fclose(f);
  }
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  u.self = r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
  return u;
}

// sgemm GFLOP/s for C[m x n] = A[m x k] B^T (B stored n x k, as the ViT weights are).
double sgemm_gflops(int64_t m, int64_t n, int64_t k, int threads, bool b_transposed, int reps) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  vismem::set_blas_threads(threads);
  const double s = median_seconds(reps, [&] {
    vismem::matmul(m, n, k, a.data(), k, b.data(), b_transposed ? k : n, c.data(), n, b_transposed);
  });
  return 2.0 * m * n * k / s * 1e-9;
}

// Model FLOPs per image (2 per multiply-add), and those actually executed: the
// last block computes only the CLS token's outputs when only the embedding is wanted.
struct Flops {
  double model = 0, executed = 0;
};
Flops vit_flops(const vismem::VitConfig& c, int s) {
  const double D = c.hidden, M = c.mlp, K = 3.0 * c.patch * c.patch, G = double(s / c.patch) * (s / c.patch);
  const double T = c.tokens(s, s);
  auto block = [&](double nq) {
    const double mlp = c.swiglu ? 2 * nq * D * 2 * M + 2 * nq * M * D : 2 * nq * D * M * 2;
    return 2 * T * D * 3 * D + 2 * 2 * nq * T * D + 2 * nq * D * D + mlp;
  };
  Flops f;
  f.model = 2 * G * K * D + c.layers * block(T);
  f.executed = 2 * G * K * D + (c.layers - 1) * block(T) + block(1);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string which = "all";
  std::vector<std::string> only;  // --case BATCHxTHREADS:SPLIT, e.g. 1x2:tokens
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--case") && i + 1 < argc) only.push_back(argv[++i]);
    else if (!std::strcmp(argv[i], "--model") && i + 1 < argc &&
             (!std::strcmp(argv[i + 1], "s") || !std::strcmp(argv[i + 1], "b") || !std::strcmp(argv[i + 1], "all")))
      which = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_vit [--quick] [--model s|b|all] [--case 1x2:tokens]...\n");
      return 2;
    }
  }
  const int S = 224;
  std::printf("bench_vit: DINOv2-shaped ViTs at %d px, random weights, float32; medians\n\n", S);

  // The denominator: this machine's sgemm, at a large square size and at the
  // shape of ViT-B's fc1 over one image (257 tokens).
  double peak[3] = {0, 0, 0};
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::printf("sgemm (OpenBLAS via vismem::matmul, OPENBLAS_CORETYPE=%s), GFLOP/s:\n", core ? core : "<unset>");
  for (int t : {1, 2}) {
    peak[t] = sgemm_gflops(2048, 2048, 2048, t, true, quick ? 3 : 5);
    const double fc1 = sgemm_gflops(257, 3072, 768, t, true, quick ? 5 : 15);
    const double fc1_nn = sgemm_gflops(257, 3072, 768, t, false, quick ? 5 : 15);
    std::printf("  %d thread(s): 2048^3 %.1f | 257x3072x768 B^T %.1f, B %.1f\n", t, peak[t], fc1, fc1_nn);
  }
  if (peak[1] < 40)
    std::printf("  note: %.0f GFLOP/s on one core is a generic-kernel rate. OpenBLAS 0.3.21 (Debian 12) does not\n"
                "  recognize some newer Xeons and falls back to its Prescott (SSE3) kernels; on AVX-512 CPUs run\n"
                "  with OPENBLAS_CORETYPE=SkylakeX (it must be set before the process starts).\n",
                peak[1]);
  std::printf("\n");

  // Exact GELU over one ViT-S/14 fc1 output (257 x 1536), std::erf vs fast_erf
  // (fast_erf stays within 5e-7 of erf; tests/test_vit.cpp).
  {
    std::vector<float> h(257 * 1536), g(h.size());
    std::mt19937 r(2);
    std::normal_distribution<float> d(0.0f, 2.0f);
    for (auto& x : h) x = d(r);
    const double t_std = median_seconds(quick ? 5 : 21, [&] {
      for (size_t i = 0; i < h.size(); ++i) g[i] = 0.5f * h[i] * (1.0f + std::erf(h[i] * 0.70710678f));
    });
    const double t_fast = median_seconds(quick ? 5 : 21, [&] {
      for (size_t i = 0; i < h.size(); ++i) g[i] = vismem::gelu_erf(h[i]);
    });
    std::printf("GELU 257x1536: std::erf %.3f ms, fast_erf %.3f ms (%.1fx); "
                "x12 layers = %.1f ms vs %.1f ms per image\n\n",
                t_std * 1e3, t_fast * 1e3, t_std / t_fast, 12 * t_std * 1e3, 12 * t_fast * 1e3);
  }

  struct Row {
    const char* name;
    vismem::VitConfig cfg;
    double pytorch_2t;  // anchor: PyTorch 2.11 fp32, 2 threads, another Intel Xeon
  };
  std::vector<Row> rows;
  if (which == "s" || which == "all") rows.push_back({"ViT-S/14", vismem::VitConfig::dinov2_vits14(), 12.9});
  if (which == "b" || which == "all") rows.push_back({"ViT-B/14", vismem::VitConfig::dinov2_vitb14(), 3.5});

  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> px(size_t(16) * 3 * S * S);
  for (auto& x : px) x = nd(rng);

  // others: cores busy with other processes during the case (0 = a quiet machine).
  std::printf("%-9s %5s %7s %-7s %8s %9s %9s %8s %6s\n", "model", "batch", "threads", "split", "img/s", "ms/img",
              "GFLOP/s", "%sgemm", "others");
  for (const auto& row : rows) {
    const vismem::VitModel m = vismem::random_vit_model(row.cfg, 1);
    const Flops f = vit_flops(row.cfg, S);
    std::vector<float> out(size_t(16) * row.cfg.dim());
    double best2 = 0;
    struct Case {
      int batch, threads;
      vismem::VitSplit split;
      const char* label;
    };
    const std::vector<Case> cases = {
        {1, 1, vismem::VitSplit::automatic, "auto"}, {16, 1, vismem::VitSplit::automatic, "auto"},
        {1, 2, vismem::VitSplit::tokens, "tokens"}, {1, 2, vismem::VitSplit::blas, "blas"},
        {16, 2, vismem::VitSplit::images, "images"}, {16, 2, vismem::VitSplit::tokens, "tokens"},
        {16, 2, vismem::VitSplit::blas, "blas"},
    };
    for (const auto& cs : cases) {
      const std::string id = std::to_string(cs.batch) + "x" + std::to_string(cs.threads) + ":" + cs.label;
      if (!only.empty() && std::find(only.begin(), only.end(), id) == only.end()) continue;
      const int reps = cs.batch == 1 ? (quick ? 3 : 9) : (quick ? 1 : 3);
      const CpuUse u0 = cpu_use();
      const auto t0 = Clock::now();
      const double s = median_seconds(
          reps, [&] { vismem::vit_embed(m, px.data(), cs.batch, S, S, out.data(), cs.threads, cs.split); });
      const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
      const CpuUse u1 = cpu_use();
      const double others = std::max(0.0, (u1.machine - u0.machine) - (u1.self - u0.self)) / wall;
      const double ips = cs.batch / s, gf = f.executed * ips * 1e-9;
      if (cs.threads == 2) best2 = std::max(best2, ips);
      std::printf("%-9s %5d %7d %-7s %8.2f %9.1f %9.1f %7.0f%% %6.2f\n", row.name, cs.batch, cs.threads, cs.label,
                  ips, 1e3 / ips, gf, 100.0 * gf / peak[cs.threads], others);
    }
    std::printf("  %s: %.2f GFLOP/image (model), %.2f executed (last block CLS-only); "
                "best 2-thread %.2f img/s vs PyTorch 2.11 fp32 anchor %.1f img/s "
                "(DIFFERENT machine, Intel Xeon, 2 threads): ratio %.2f\n\n",
                row.name, f.model * 1e-9, f.executed * 1e-9, best2, row.pytorch_2t, best2 / row.pytorch_2t);
  }
  return 0;
}
