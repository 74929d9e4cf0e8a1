// qgemm.h: int8 matrix products for the encoders' opt-in int8 mode: weights
// quantized once per output channel (symmetric, 8 bits), activations per row
// at each call (dynamic, asymmetric, 8 bits where the weights allow it, else 7),
// products summed exactly in int32, then scaled back (plus an optional fused
// bias and clamp).
//
// Basic usage:
//   vismem::QuantizedMatrix q = vismem::quantize_rows(w.data(), n, k);   // W [n, k] (PyTorch layout)
//   vismem::qmatmul(m, a, k, q, 0, n, c, n);    // C[m, 0:n] ~= A[m, k] W^T
//
// Error: weights are rounded to 1/254 of their row's max |w|, activations to
// 1/255 (or 1/127) of their row's range (errors average out over k);
// tests/test_qgemm.cpp holds the product to the float one and to an exact
// integer one. Kernels: AVX2 (vpmaddubsw; its int16 pair sums cannot saturate:
// 8-bit activations only where every adjacent pair of weights has |q| sum <= 128,
// after the few larger pairs move their excess to extension slots), chosen by
// cpu_isa(); where the CPU has VNNI (AVX512-VNNI at the avx512 level, or
// AVX-VNNI) the same kernel with vpdpbusd in place of vpmaddubsw + vpmaddwd +
// vpaddd; the portable level the same kernel on 128-bit SSSE3 vectors (plain
// C++ off x86). Results are identical at every level and with or without
// VNNI (exact int32 sums, the same float epilogue).
// Extremes: a row of A with a NaN or an infinity gives NaN outputs (the clamp
// lets NaN through), as a float product would; a row whose range is below
// ~1e-36 counts as zero; finite values past FLT_MAX / 2 keep their size.
// quantize_rows throws vismem::Error on a NaN or infinite weight.
// Thread safety: a QuantizedMatrix is read-only after quantize_rows; qmatmul
// may run from several threads at once (each call quantizes A into its own buffer).
#pragma once
#include <cstdint>
#include <vector>

#include "aligned.h"

namespace vismem {

struct QuantizedMatrix {
  int64_t n = 0, k = 0;
  int64_t kp = 0;              // packed k: kp_main(), the extension slots, zero padding to a multiple of 4
  AlignedVector<int8_t> packed;  // [n/8 blocks][kp/4][8 columns][4]: one 32-byte vector per block and 4 k
  std::vector<float> scale;    // [n] per output channel: w ~= q * scale
  std::vector<int32_t> col_sum;  // [n] sum of q over kp (removes the activations' zero point)
  int32_t act_levels = 127;    // activations per row: 255 (8-bit) where the weights allow it, else 127
  std::vector<int32_t> ext_src;  // extension slot t (at k index kp_main() + t) holds activation column ext_src[t]
  int64_t kp_main() const { return k + (k & 1); }  // where the extension starts (even, so it pairs with itself)
  bool empty() const { return n == 0; }
};

// Quantizes W [n, k] (row j = output channel j). n is padded to a multiple of 8 with zero rows.
// grid (optional, [n]): row j's values are integer multiples of grid[j] (the
// dequantized weights of a uint8 model, (q - zero_point) * scale); rows whose
// multiples fit in [-127, 127] are then kept exactly (scale grid[j]), the rest
// are rounded as without a grid.
QuantizedMatrix quantize_rows(const float* w, int64_t n, int64_t k, const float* grid = nullptr);

// What qmatmul applies to each output before storing it: + bias[c] (bias may
// be null), then clamp to [lo, hi] (a fused ReLU / ReLU6; the defaults clamp nothing).
struct QuantEpilogue {
  const float* bias = nullptr;  // [w.n], indexed by absolute output column
  float lo = -3.4028235e38f, hi = 3.4028235e38f;
};

// C[r, c] = clamp(sum_k A[r, k] W[c, k] + bias[c]) for rows [0, m) and output
// columns [c0, c1) (any range in [0, w.n]; C's other columns are not written).
// A is quantized per row inside the call.
void qmatmul(int64_t m, const float* a, int64_t lda, const QuantizedMatrix& w, int64_t c0, int64_t c1, float* c,
             int64_t ldc, const QuantEpilogue& epi = {});

}  // namespace vismem
