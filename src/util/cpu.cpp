#include "cpu.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace vismem {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    c.avxvnni = __builtin_cpu_supports("avxvnni");
    // F16C has no __builtin_cpu_supports name in GCC 12: CPUID.1:ECX bit 29.
    unsigned a = 1, b = 0, cx = 0, d = 0;
    __asm__("cpuid" : "+a"(a), "=b"(b), "=c"(cx), "=d"(d) : "c"(0));
    c.f16c = (cx >> 29) & 1u;
#endif
    return c;
  }();
  return f;
}

Isa cpu_max_isa() {
  const CpuFeatures& f = cpu_features();
  if (!(f.avx2 && f.fma && f.f16c)) return Isa::portable;
  if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl) return Isa::avx512;
  return Isa::avx2;
}

namespace {
Isa isa_from_env() {
  const Isa hw = cpu_max_isa();
  const char* env = std::getenv("VISMEM_ISA");
  if (!env || !*env) return hw;
  Isa want;
  if (!std::strcmp(env, "portable")) want = Isa::portable;
  else if (!std::strcmp(env, "avx2")) want = Isa::avx2;
  else if (!std::strcmp(env, "avx512")) want = Isa::avx512;
  else {
    std::fprintf(stderr, "vismem: warning: VISMEM_ISA=%s is not portable|avx2|avx512; using %s\n", env, isa_name(hw));
    return hw;
  }
  if (want > hw) {
    std::fprintf(stderr, "vismem: warning: VISMEM_ISA=%s but this CPU supports up to %s; using %s\n", env,
                 isa_name(hw), isa_name(hw));
    return hw;
  }
  return want;
}
std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(isa_from_env())};
  return slot;
}
}  // namespace

Isa cpu_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

Isa set_isa(Isa isa) {
  if (isa > cpu_max_isa()) isa = cpu_max_isa();
  return static_cast<Isa>(isa_slot().exchange(static_cast<int>(isa)));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) {
        p = line.find_first_not_of(" \t", p + 1);
        return p == std::string::npos ? "unknown" : line.substr(p);
      }
    }
  }
  return "unknown";
}

std::string cpu_description() {
  const CpuFeatures& f = cpu_features();
  std::string flags;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!flags.empty()) flags += ' ';
    flags += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512bf16, "avx512bf16");
  add(f.avxvnni, "avxvnni");
  if (flags.empty()) flags = "baseline only";
  return cpu_model() + " | " + flags + " | kernels: " + isa_name(cpu_isa());
}

}  // namespace vismem
