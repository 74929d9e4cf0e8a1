// cpu.h: which vector instructions this CPU has, and which kernel level to run.
//
// Basic usage:
//   switch (vismem::cpu_isa()) {              // best level this CPU and OS support,
//     case vismem::Isa::avx512: ...           // capped by VISMEM_ISA (portable|avx2|avx512)
//     case vismem::Isa::avx2:   ...
//     default:                  ...           // portable: any x86-64 (SSE2), or not x86
//   }
//   std::cout << vismem::cpu_description();   // "AMD EPYC ... | avx2 fma f16c | kernels: avx2"
//
// One binary runs on every machine of ours: the build targets baseline x86-64
// and the hot kernels are compiled once per level (function attributes or
// per-file flags) and chosen here at run time. Isa levels:
//   portable: no assumption beyond the build's baseline;
//   avx2:     AVX2 + FMA + F16C (x86-64-v3);
//   avx512:   avx2 plus AVX-512 F, BW, DQ, VL (x86-64-v4).
// VISMEM_ISA lowers the level (to test the portable paths on any machine);
// asking for more than the CPU has is refused with a warning on stderr.
// Thread safety: all functions may be called from any thread; the level is
// fixed at the first call unless set_isa() changes it (tests only).
#pragma once
#include <string>

namespace vismem {

enum class Isa { portable = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
};

const CpuFeatures& cpu_features();  // read once (cpuid + OS state, via __builtin_cpu_supports)
Isa cpu_max_isa();                   // the best level the hardware supports
Isa cpu_isa();                       // the level kernels use (cpu_max_isa() capped by VISMEM_ISA)
// Tests: force a level (clamped to cpu_max_isa()); returns the previous one.
Isa set_isa(Isa isa);
const char* isa_name(Isa isa);       // "portable", "avx2", "avx512"
std::string cpu_model();             // /proc/cpuinfo "model name", or "unknown"
std::string cpu_description();       // model | feature flags | kernels: level

}  // namespace vismem
