// vit_kernels_impl.h: the bodies of vit_kernels.h, included once per ISA level
// by vit_kernels*.cpp under a `#pragma GCC target` and with VISMEM_KERNEL_NS
// naming the level's namespace. No include guard on purpose. Headers are
// included by the including file before its pragma, so inline helpers from
// them (fast_exp, fast_erf) are baseline code that GCC inlines into these
// kernels and vectorizes at the kernel's level. The including file also
// turns off -ftrapping-math for them: the clamps in fast_exp / fast_erf are
// comparisons that may raise FE_INVALID on a NaN, so under the default GCC
// will not if-convert them and leaves every loop calling them scalar (GELU and
// the softmax were, even with -march=native). Nothing here reads the FP flags. The including file builds its
// table after the pragma ends (vit_kernels_table.h), so the only code compiled
// for a level is code that runs once that level was chosen.

namespace vismem::VISMEM_KERNEL_NS {
namespace {

void layer_norm(const float* x, int64_t ldx, int64_t rows, int d, const float* g, const float* b, float eps,
                float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int k = 0; k < d; ++k) sum += xr[k];
    const float mean = sum / float(d);
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int k = 0; k < d; ++k) var += (xr[k] - mean) * (xr[k] - mean);
    const float rstd = 1.0f / __builtin_sqrtf(var / float(d) + eps);
#pragma omp simd
    for (int k = 0; k < d; ++k) yr[k] = (xr[k] - mean) * rstd * g[k] + b[k];
  }
}

void softmax(float* a, int64_t rows, int n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* ar = a + r * n;
    float mx = ar[0];
#pragma omp simd reduction(max : mx)
    for (int k = 0; k < n; ++k) mx = ar[k] > mx ? ar[k] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int k = 0; k < n; ++k) {
      ar[k] = fast_exp(ar[k] - mx);
      sum += ar[k];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int k = 0; k < n; ++k) ar[k] *= inv;
  }
}

// One loop per activation so each is a straight vectorizable loop. bias may
// be null (already in h: the GEMM started from it).
template <class F>
inline void bias_map(float* h, int64_t ld, int64_t rows, int64_t c0, int64_t c1, const float* bias, F f) {
  for (int64_t r = 0; r < rows; ++r) {
    float* hr = h + r * ld;
    if (bias) {
#pragma omp simd
      for (int64_t k = c0; k < c1; ++k) hr[k] = f(hr[k] + bias[k]);
    } else {
#pragma omp simd
      for (int64_t k = c0; k < c1; ++k) hr[k] = f(hr[k]);
    }
  }
}

void bias_act(float* h, int64_t ld, int64_t rows, int64_t c0, int64_t c1, const float* bias, VitAct act) {
  switch (act) {
    case VitAct::none: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return v; }); break;
    case VitAct::gelu: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return gelu_erf(v); }); break;
    case VitAct::gelu_tanh: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return gelu_tanh(v); }); break;
    case VitAct::quick_gelu: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return quick_gelu(v); }); break;
    case VitAct::silu: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return silu(v); }); break;
    case VitAct::relu: bias_map(h, ld, rows, c0, c1, bias, [](float v) { return v > 0.0f ? v : 0.0f; }); break;
  }
}

void swiglu(float* h, int64_t r0, int64_t r1, int m, const float* bias) {
  for (int64_t r = r0; r < r1; ++r) {
    float* hr = h + r * 2 * m;
    if (bias) {
#pragma omp simd
      for (int k = 0; k < m; ++k) hr[k] = silu(hr[k] + bias[k]) * (hr[m + k] + bias[m + k]);
    } else {
#pragma omp simd
      for (int k = 0; k < m; ++k) hr[k] = silu(hr[k]) * hr[m + k];
    }
  }
}

void residual(float* x, int64_t ldx, const float* t, int64_t ldt, int64_t rows, int64_t c0, int64_t c1,
              const float* bias, const float* ls) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * ldx;
    const float* tr = t + r * ldt;
    if (ls) {
#pragma omp simd
      for (int64_t k = c0; k < c1; ++k) xr[k] += ls[k] * (tr[k] + bias[k]);
    } else {
#pragma omp simd
      for (int64_t k = c0; k < c1; ++k) xr[k] += tr[k] + bias[k];
    }
  }
}

}  // namespace
}  // namespace vismem::VISMEM_KERNEL_NS
