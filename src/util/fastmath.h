// fastmath.h: branch-free float exp / erf that GCC vectorizes inside plain loops
// (std::exp / std::erf are scalar calls and cost more than the attention matmuls).
//
// Basic usage:
//   for (int i = 0; i < n; ++i) y[i] = vismem::fast_exp(x[i]);   // vectorized at -O3
//   float g = vismem::gelu_erf(x);                                 // exact-GELU, |err| ~1e-7
//
// Accuracy (tests/test_vit.cpp checks it against <cmath>): fast_exp relative
// error < 2e-7 on [-87, 88]; fast_erf absolute error < 5e-7 everywhere.
// Thread safety: pure functions.
#pragma once
#include <cstdint>
#include <bit>

namespace vismem {

// exp(x): Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, then Cephes'
// degree-6 polynomial for e^r; 2^k built in the exponent bits. Inputs are
// clamped to [-87, 88] so 2^k stays a normal float (exp(-87) ~ 1.6e-38).
// k is rounded with the 1.5 * 2^23 trick rather than floor + int conversion:
// GCC turns (int)floorf into a call it cannot vectorize.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln2) lands in the low mantissa bits
  const float k = t - 12582912.0f;
  float r = x - k * 0.693359375f;  // ln2 split in a high part exact in float...
  r = r - k * -2.12194440e-4f;     // ...and the rest
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t k_int = std::bit_cast<int32_t>(t) - 0x4B400000;
  return p * std::bit_cast<float>((k_int + 127) << 23);
}

// erf(x): odd rational approximation p(x)/q(x) on [-4, 4] (erf is +-1 in float
// beyond); the coefficients are Eigen's / XLA's float erf.
inline float fast_erf(float x) {
  x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

// HF "gelu" (torch.nn.GELU(), erf form).
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + fast_erf(x * 0.70710678118654752f)); }

// HF "gelu_new" / "gelu_pytorch_tanh": tanh form, tanh(y) = 1 - 2 / (e^{2y} + 1).
inline float gelu_tanh(float x) {
  const float y = 0.79788456080286536f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (2.0f - 2.0f / (fast_exp(2.0f * y) + 1.0f));
}

// CLIP's quick_gelu: x * sigmoid(1.702 x).
inline float quick_gelu(float x) { return x / (1.0f + fast_exp(-1.702f * x)); }

inline float silu(float x) { return x / (1.0f + fast_exp(-x)); }

}  // namespace vismem
