// vit_kernels.h: the ViT's element-wise and row kernels (LayerNorm, softmax,
// activations, bias and residual epilogues of the GEMMs), compiled once per
// vector ISA (portable / avx2 / avx512) and chosen at run time by cpu_isa().
//
// Basic usage:
//   const vismem::VitKernels& k = vismem::vit_kernels();   // the level cpu_isa() names now
//   k.layer_norm(x, D, rows, D, gamma, beta, 1e-6f, y, D);
//   k.softmax(att, rows, T);
//
// Why: without -march=native the compiler may only use SSE (x86-64-v2), and
// these loops (exp in the softmax, erf in GELU) were a third of a ViT forward.
// One source (vit_kernels_impl.h) is compiled under three target pragmas, so
// the levels agree up to floating-point contraction (FMA) and vector width:
// tests/test_vit.cpp holds each level to the same HF fixtures.
// Thread safety: the tables are immutable; kernels touch only their arguments.
#pragma once
#include <cstdint>

#include "cpu.h"

namespace vismem {

// The activation applied after a bias add (none: the bias only).
enum class VitAct { none, gelu, gelu_tanh, quick_gelu, silu, relu };

struct VitKernels {
  Isa isa;
  // y[r] = (x[r] - mean) / sqrt(var + eps) * g + b, rows `ldx` / `ldy` apart.
  void (*layer_norm)(const float* x, int64_t ldx, int64_t rows, int d, const float* g, const float* b, float eps,
                     float* y, int64_t ldy);
  // In place, each of `rows` rows of length n (contiguous).
  void (*softmax)(float* a, int64_t rows, int n);
  // h[r, c0:c1] = act(h[r, c0:c1] + bias[c0:c1]), rows ld apart (bias null: act only).
  void (*bias_act)(float* h, int64_t ld, int64_t rows, int64_t c0, int64_t c1, const float* bias, VitAct act);
  // SwiGLU rows [r0, r1) of h [rows, 2m]: h[r, :m] = silu(h[r, :m] + b[:m]) * (h[r, m:] + b[m:]) (b null: none).
  void (*swiglu)(float* h, int64_t r0, int64_t r1, int m, const float* bias);
  // x[r, c0:c1] += ls[c0:c1] * (t[r, c0:c1] + bias[c0:c1]); ls null: no scale.
  void (*residual)(float* x, int64_t ldx, const float* t, int64_t ldt, int64_t rows, int64_t c0, int64_t c1,
                   const float* bias, const float* ls);
};

const VitKernels& vit_kernels(Isa isa);             // a level's table (capped at what the CPU has)
inline const VitKernels& vit_kernels() { return vit_kernels(cpu_isa()); }

}  // namespace vismem
