// bench_vit: images/s of the native DINOv2 ViT-S/14 and ViT-B/14 at 224 px
// (random weights, real shapes) against PyTorch in the same run: the same
// network built from torch.nn layers by bench/vit_torch.py, loaded with the same
// weights (which also cross-checks the embeddings), timed at the same thread
// counts and batch sizes, case by case, on the same machine.
//
// Usage: bench_vit [--quick] [--model s|b|all] [--no-torch] [--python PATH] [--script PATH]
//                  [--threads 1,2] [--batches 1,16] [--kernels] [--int8] [--sgemm] [--reps N]
//   --quick:   fewer repetitions (smoke runs); medians are printed either way.
//   --reps N:  rounds at batch 1 (default 9; N / 3 at larger batches), for
//              steadier medians on a noisy machine.
//   --python:  the interpreter with torch (default /usr/bin/python3: Debian's python3-torch).
//   --script:  vit_torch.py (default: bench/vit_torch.py next to the build folder).
//   --kernels: also time the non-GEMM kernels at every ISA level this CPU runs.
//   --int8:    also time the opt-in int8 mode (quantize_vit_model) in each case,
//              and compare its embeddings with the float ones (cosine).
//   --sgemm:   also time the float32 model through OpenBLAS sgemm (what runs
//              where pack_vit_model does not pack) against the packed weights
//              (pmatmul) that "ours" uses on this CPU, in the same rounds.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpu.h"
#include "error.h"
#include "linalg.h"
#include "npy.h"
#include "vit.h"
#include "vit_kernels.h"

namespace fs = std::filesystem;

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

// Busy CPU seconds of the whole machine (/proc/stat) and of this process and
// its children: their difference over a case is what other processes took,
// printed so that a number measured on a shared machine shows how contended it was.
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
  // Children's time counts only once they are reaped, so the torch process's
  // share is read from /proc/<pid>/stat by the caller instead.
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  u.self = r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
  return u;
}

double proc_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14, 15: utime, stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

// sgemm GFLOP/s for C[m x n] = A[m x k] op(B) (the shape of ViT-B's fc1 over one image).
double sgemm_gflops(int64_t m, int64_t n, int64_t k, bool b_transposed, int reps) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  vismem::set_blas_threads(1);
  const double s = median_seconds(reps, [&] {
    vismem::matmul(m, n, k, a.data(), k, b.data(), b_transposed ? k : n, c.data(), n, b_transposed);
  });
  return 2.0 * m * n * k / s * 1e-9;
}

// The same product with the weights packed once (what the ViT's linear layers run on AVX2).
double pmatmul_gflops(int64_t m, int64_t n, int64_t k, int reps) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  const vismem::PackedMatrix p = vismem::pack_rows(b.data(), n, k);
  const double s = median_seconds(reps, [&] { vismem::pmatmul(m, a.data(), k, p, 0, n, nullptr, c.data(), n); });
  return 2.0 * m * n * k / s * 1e-9;
}

// The model, input and our embeddings as vit_torch.py reads them: config.json
// and one .npy per weight in PyTorch's [out, in] layout.
void write_torch_dir(const vismem::VitModel& m, const fs::path& dir, const std::vector<float>& px, int n, int s,
                     const std::vector<float>& ours) {
  const vismem::VitConfig& c = m.config;
  fs::create_directories(dir);
  {
    std::FILE* f = std::fopen((dir / "config.json").c_str(), "w");
    if (!f) throw vismem::Error("cannot write " + (dir / "config.json").string());
    std::fprintf(f, "{\"hidden\": %d, \"layers\": %d, \"heads\": %d, \"mlp\": %d, \"patch\": %d, \"grid\": %d, "
                 "\"eps\": %g}\n", c.hidden, c.layers, c.heads, c.mlp, c.patch, c.grid(), double(c.ln_eps));
    std::fclose(f);
  }
  auto put = [&](const std::string& name, const std::vector<float>& v) {
    vismem::write_npy_f32((dir / (name + ".npy")).string(), v.data(), {int64_t(v.size())});
  };
  const vismem::VitWeights& w = m.weights;
  put("patch_w", w.patch_w);
  put("patch_b", w.patch_b);
  put("cls", w.cls);
  put("pos", w.pos);
  put("final_ln_w", w.final_ln_w);
  put("final_ln_b", w.final_ln_b);
  const int64_t D = c.hidden, M = c.mlp;
  for (int i = 0; i < c.layers; ++i) {
    const vismem::VitLayerWeights& L = w.layers[i];
    const std::string p = "layer" + std::to_string(i) + ".";
    auto put_2d = [&](const std::string& name, const std::vector<float>& v, int64_t rows, int64_t cols) {
      vismem::write_npy_f32((dir / (p + name + ".npy")).string(), v.data(), {rows, cols});
    };
    put(p + "ln1_w", L.ln1_w);
    put(p + "ln1_b", L.ln1_b);
    put_2d("qkv_w", L.qkv_w, 3 * D, D);
    put(p + "qkv_b", L.qkv_b);
    put_2d("out_w", L.out_w, D, D);
    put(p + "out_b", L.out_b);
    put(p + "ls1", L.ls1);
    put(p + "ln2_w", L.ln2_w);
    put(p + "ln2_b", L.ln2_b);
    put_2d("fc1_w", L.fc1_w, M, D);
    put(p + "fc1_b", L.fc1_b);
    put_2d("fc2_w", L.fc2_w, D, M);
    put(p + "fc2_b", L.fc2_b);
    put(p + "ls2", L.ls2);
  }
  vismem::write_npy_f32((dir / "input.npy").string(), px.data(), {n, 3, s, s});
  vismem::write_npy_f32((dir / "ours.npy").string(), ours.data(), {n, int64_t(c.dim())});
}

// vit_torch.py as a child process spoken to over two pipes, so that the two
// engines can take turns run by run while the model stays loaded.
class TorchAnchor {
 public:
  TorchAnchor(const std::string& python, const std::string& script, const fs::path& dir) {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) throw vismem::Error("pipe: " + std::string(strerror(errno)));
    pid_ = fork();
    if (pid_ < 0) throw vismem::Error("fork: " + std::string(strerror(errno)));
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[1]);
      close(from_child[0]);
      execl(python.c_str(), python.c_str(), script.c_str(), dir.c_str(), static_cast<char*>(nullptr));
      std::fprintf(stderr, "bench_vit: cannot run %s: %s\n", python.c_str(), strerror(errno));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
  }
  ~TorchAnchor() {
    if (in_) {
      std::fprintf(in_, "quit\n");
      std::fclose(in_);
    }
    if (out_) std::fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  TorchAnchor(const TorchAnchor&) = delete;
  TorchAnchor& operator=(const TorchAnchor&) = delete;

  // The next line the script prints, without the newline ("" when it exited).
  std::string line() {
    char buf[4096];
    if (!std::fgets(buf, sizeof buf, out_)) return "";
    std::string s(buf);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  // The median seconds of torch's best split of `threads` (its threads / OpenBLAS's).
  struct Timing {
    double seconds = 0;
    int torch_threads = 0, blas_threads = 0;
  };
  Timing seconds(int threads, int batch, int reps) {
    std::fprintf(in_, "time %d %d %d\n", threads, batch, reps);
    std::fflush(in_);
    const std::string l = line();
    Timing t;
    if (std::sscanf(l.c_str(), "seconds %lf torch_threads %d blas_threads %d", &t.seconds, &t.torch_threads,
                    &t.blas_threads) != 3)
      throw vismem::Error("vit_torch.py answered '" + l + "'");
    return t;
  }
  // One timed run (no warm-up) at a given split.
  double once(int torch_threads, int blas_threads, int batch) {
    std::fprintf(in_, "once %d %d %d\n", torch_threads, blas_threads, batch);
    std::fflush(in_);
    const std::string l = line();
    double s = 0;
    if (std::sscanf(l.c_str(), "seconds %lf", &s) != 1) throw vismem::Error("vit_torch.py answered '" + l + "'");
    return s;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::FILE* in_ = nullptr;
  std::FILE* out_ = nullptr;
};

std::vector<int> int_list(const char* s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    const int x = std::atoi(item.c_str());
    if (x > 0) v.push_back(x);
  }
  return v;
}

std::string default_script(const char* argv0) {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) exe = fs::absolute(argv0);
  return (exe.parent_path().parent_path() / "bench" / "vit_torch.py").string();
}

// The non-GEMM kernels of one ViT-S/14 block over one 224 px image (257 tokens,
// D 384, 6 heads, MLP 1536), per ISA level this CPU runs: where the levels differ.
void kernel_table(bool quick) {
  const int T = 257, D = 384, H = 6, M = 1536, reps = quick ? 5 : 21;
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  auto rnd = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  const std::vector<float> h0 = rnd(size_t(T) * M), a0 = rnd(size_t(H) * T * T), x0 = rnd(size_t(T) * D),
                           g = rnd(M), b = rnd(M);
  std::vector<float> h = h0, a = a0, x = x0, y(x0.size());
  std::printf("non-GEMM kernels of one ViT-S/14 block, one image, microseconds (median of %d):\n", reps);
  std::printf("%-9s %10s %10s %10s %10s %10s\n", "level", "GELU+bias", "softmax", "LayerNorm", "residual", "sum");
  for (int level = 0; level <= int(vismem::cpu_max_isa()); ++level) {
    const vismem::VitKernels& k = vismem::vit_kernels(vismem::Isa(level));
    auto us = [&](auto&& f) { return 1e6 * median_seconds(reps, f); };
    const double t_gelu = us([&] {
      h = h0;
      k.bias_act(h.data(), M, T, 0, M, b.data(), vismem::VitAct::gelu);
    }) - us([&] { h = h0; });
    const double t_soft = us([&] {
      a = a0;
      k.softmax(a.data(), int64_t(H) * T, T);
    }) - us([&] { a = a0; });
    const double t_ln = 2 * us([&] { k.layer_norm(x.data(), D, T, D, g.data(), b.data(), 1e-6f, y.data(), D); });
    const double t_res = 2 * us([&] { k.residual(x.data(), D, y.data(), D, T, 0, D, b.data(), g.data()); });
    std::printf("%-9s %10.0f %10.0f %10.0f %10.0f %10.0f\n", vismem::isa_name(k.isa), t_gelu, t_soft, t_ln, t_res,
                t_gelu + t_soft + t_ln + t_res);
  }
  std::printf("(x12 blocks per image; LayerNorm and residual count both of a block's)\n\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, torch = true, kernels = false, int8 = false, sgemm = false;
  std::string which = "all", python = "/usr/bin/python3", script = default_script(argv[0]);
  std::vector<int> thread_list = {1, 2}, batch_list = {1, 16};
  int reps1 = 0;  // rounds at batch 1; 0: 9 (3 with --quick)
  for (int i = 1; i < argc; ++i) {
    const bool more = i + 1 < argc;
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--no-torch")) torch = false;
    else if (!std::strcmp(argv[i], "--kernels")) kernels = true;
    else if (!std::strcmp(argv[i], "--int8")) int8 = true;
    else if (!std::strcmp(argv[i], "--sgemm")) sgemm = true;
    else if (!std::strcmp(argv[i], "--python") && more) python = argv[++i];
    else if (!std::strcmp(argv[i], "--script") && more) script = argv[++i];
    else if (!std::strcmp(argv[i], "--threads") && more) thread_list = int_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--batches") && more) batch_list = int_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && more && std::atoi(argv[i + 1]) > 0) reps1 = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--model") && more &&
             (!std::strcmp(argv[i + 1], "s") || !std::strcmp(argv[i + 1], "b") || !std::strcmp(argv[i + 1], "all")))
      which = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_vit [--quick] [--model s|b|all] [--no-torch] [--python PATH] [--script PATH]\n"
                   "                 [--threads 1,2] [--batches 1,16] [--kernels] [--int8] [--sgemm] [--reps N]\n");
      return 2;
    }
  }
  if (reps1 == 0) reps1 = quick ? 3 : 9;
  const auto rounds = [&](int batch) { return batch == 1 ? reps1 : std::max(1, reps1 / 3); };
  if (torch && (access(python.c_str(), X_OK) != 0 || access(script.c_str(), R_OK) != 0)) {
    std::printf("note: %s or %s is missing: no PyTorch anchor (scripts/setup.sh installs python3-torch)\n",
                python.c_str(), script.c_str());
    torch = false;
  }
  const int S = 224, max_batch = *std::max_element(batch_list.begin(), batch_list.end());
  std::printf("bench_vit: DINOv2-shaped ViTs at %d px, random weights, float32; medians\n", S);
  std::printf("cpu: %s\n", vismem::cpu_description().c_str());
  std::printf("sgemm, 1 thread, 257x3072x768 (OpenBLAS via vismem::matmul): B^T %.1f GFLOP/s, B %.1f GFLOP/s\n",
              sgemm_gflops(257, 3072, 768, true, quick ? 3 : 9), sgemm_gflops(257, 3072, 768, false, quick ? 3 : 9));
  std::printf("pmatmul, 1 thread, 257x3072x768 (weights packed once, packed_gemm.h): %.1f GFLOP/s; the ViT's\n"
              "linear layers run %s on this CPU\n\n",
              pmatmul_gflops(257, 3072, 768, quick ? 3 : 9),
              vismem::packed_gemm_preferred() ? "packed (pmatmul)" : "through sgemm (packing is not preferred here)");

  if (kernels) kernel_table(quick);

  struct Row {
    const char* name;
    vismem::VitConfig cfg;
  };
  std::vector<Row> rows;
  if (which == "s" || which == "all") rows.push_back({"ViT-S/14", vismem::VitConfig::dinov2_vits14()});
  if (which == "b" || which == "all") rows.push_back({"ViT-B/14", vismem::VitConfig::dinov2_vitb14()});

  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> px(size_t(max_batch) * 3 * S * S);
  for (auto& x : px) x = nd(rng);
  const int check_n = std::min(max_batch, 4);

  // others: cores busy with processes other than this one and torch during the case.
  std::printf("%-9s %7s %5s %10s %11s %8s %7s", "model", "threads", "batch", "ours img/s", "torch img/s", "ratio",
              "torch/blas");
  if (int8) std::printf(" %10s %8s", "int8 img/s", "int8/f32");
  if (sgemm) std::printf(" %11s %8s", "sgemm img/s", "vs sgemm");
  std::printf(" %6s\n", "others");
  for (const auto& row : rows) {
    // m: what the encoder runs here (packed where preferred); ms: the sgemm path.
    const vismem::VitModel ms = vismem::random_vit_model(row.cfg, 1);
    const vismem::VitModel m = vismem::pack_vit_model(ms);
    const vismem::VitModel m8 = int8 ? vismem::quantize_vit_model(m) : vismem::VitModel{};
    std::vector<float> out(size_t(max_batch) * row.cfg.dim());
    std::unique_ptr<TorchAnchor> anchor;
    fs::path dir;
    std::string check;
    if (torch) {
      dir = fs::temp_directory_path() / ("vismem_bench_vit_" + std::to_string(getpid()));
      std::vector<float> ours(size_t(check_n) * row.cfg.dim());
      vismem::vit_embed(m, px.data(), check_n, S, S, ours.data(), 1);
      write_torch_dir(m, dir, std::vector<float>(px.begin(), px.begin() + size_t(check_n) * 3 * S * S), check_n, S,
                      ours);
      anchor = std::make_unique<TorchAnchor>(python, script, dir);
      check = anchor->line();
      if (check.rfind("check ", 0) != 0) {
        std::printf("note: vit_torch.py did not start (%s): no PyTorch anchor\n", check.c_str());
        anchor.reset();
      }
    }
    for (int threads : thread_list)
      for (int batch : batch_list) {
        const int reps = rounds(batch);
        const CpuUse u0 = cpu_use();
        const double torch_cpu0 = anchor ? proc_cpu_seconds(anchor->pid()) : 0;
        const auto t0 = Clock::now();
        // Torch's best split of the threads first (a short search), then the
        // engines take turns run by run, so that the machine's drift (other
        // jobs, clocks) hits both alike; ratios are medians of per-round ratios.
        const TorchAnchor::Timing tt = anchor ? anchor->seconds(threads, batch, 1) : TorchAnchor::Timing{};
        const auto ours_once = [&](const vismem::VitModel& model) {
          const auto t = Clock::now();
          vismem::vit_embed(model, px.data(), batch, S, S, out.data(), threads);
          return std::chrono::duration<double>(Clock::now() - t).count();
        };
        ours_once(m);  // warm-up
        if (int8) ours_once(m8);
        if (sgemm) ours_once(ms);
        std::vector<double> so, stv, s8v, ssv, ratio, ratio8, ratios;
        for (int r = 0; r < reps; ++r) {
          so.push_back(ours_once(m));
          if (anchor) {
            stv.push_back(anchor->once(tt.torch_threads, tt.blas_threads, batch));
            ratio.push_back(stv.back() / so.back());
          }
          if (int8) {
            s8v.push_back(ours_once(m8));
            ratio8.push_back(so.back() / s8v.back());
          }
          if (sgemm) {
            ssv.push_back(ours_once(ms));
            ratios.push_back(ssv.back() / so.back());
          }
        }
        const double s = median(so), st = anchor ? median(stv) : 0, s8 = int8 ? median(s8v) : 0;
        const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
        const CpuUse u1 = cpu_use();
        const double torch_cpu = anchor ? proc_cpu_seconds(anchor->pid()) - torch_cpu0 : 0;
        const double others = std::max(0.0, (u1.machine - u0.machine) - (u1.self - u0.self) - torch_cpu) / wall;
        std::printf("%-9s %7d %5d %10.2f", row.name, threads, batch, batch / s);
        if (anchor)
          std::printf(" %11.2f %7.2fx %5d/%d", batch / st, median(ratio), tt.torch_threads, tt.blas_threads);
        else
          std::printf(" %11s %8s %7s", "-", "-", "-");
        if (int8) std::printf(" %10.2f %7.2fx", batch / s8, median(ratio8));
        if (sgemm) std::printf(" %11.2f %7.2fx", batch / median(ssv), median(ratios));
        std::printf(" %6.2f\n", others);
        std::fflush(stdout);
      }
    if (anchor) std::printf("  %s vs torch (%d images, same weights): %s\n", row.name, check_n, check.c_str());
    // Thread scaling of ours, 1 thread against the most in --threads, the two
    // taking turns run by run (the cases above ran minutes apart, and this
    // machine's speed drifts by more than the effect).
    const int tmax = *std::max_element(thread_list.begin(), thread_list.end());
    if (tmax > 1) {
      std::printf("  %s, ours, %d threads vs 1 (alternating; median of per-round ratios):", row.name, tmax);
      for (int batch : batch_list) {
        const int reps = rounds(batch);
        const auto once = [&](int threads) {
          const auto t = Clock::now();
          vismem::vit_embed(m, px.data(), batch, S, S, out.data(), threads);
          return std::chrono::duration<double>(Clock::now() - t).count();
        };
        std::vector<double> r;
        for (int i = 0; i < reps; ++i) {
          const double one = once(1);
          r.push_back(one / once(tmax));
        }
        std::printf(" batch %d %.2fx", batch, median(r));
      }
      std::printf("\n");
    }
    if (int8) {
      std::vector<float> f(size_t(max_batch) * row.cfg.dim()), q(f.size());
      vismem::vit_embed(m, px.data(), max_batch, S, S, f.data(), 1);
      vismem::vit_embed(m8, px.data(), max_batch, S, S, q.data(), 1);
      double worst = 1;
      for (int i = 0; i < max_batch; ++i) {
        double dot = 0, nf = 0, nq = 0;
        for (int j = 0; j < row.cfg.dim(); ++j) {
          const double a = f[size_t(i) * row.cfg.dim() + j], b = q[size_t(i) * row.cfg.dim() + j];
          dot += a * b, nf += a * a, nq += b * b;
        }
        worst = std::min(worst, dot / std::sqrt(nf * nq));
      }
      std::printf("  %s int8 vs float32 embeddings (%d images, random weights): lowest cosine %.5f\n", row.name,
                  max_batch, worst);
    }
    anchor.reset();
    if (!dir.empty()) fs::remove_all(dir);
  }
  std::printf("\nratio = torch seconds / ours (above 1: ours is faster). torch: bench/vit_torch.py, nn.Linear\n"
              "on the same OpenBLAS; torch/blas: the split of the threads between torch.set_num_threads and\n"
              "OpenBLAS that was fastest for torch (of t/t, 1/t, t/1), the one in the table. Ours computes only\n"
              "the CLS row in the last block (all the embedding needs); torch runs the whole block as DINOv2 does.\n");
  return 0;
}
