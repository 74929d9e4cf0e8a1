// mobilenet_kernels.inl: MobileNet's float32 kernels (NHWC, each over a range
// of its output so threads can split it) for one vector ISA level, included
// by mobilenet.cpp once per level, each time inside its own namespace and
// `#pragma GCC target` region with VISMEM_MN_LEVEL set to 0 (portable: the
// build's baseline, SSE), 1 (AVX2 + FMA) or 2 (AVX-512). GCC's C++ front end
// does not redefine __AVX2__ etc. under a target pragma, so the level macro
// sets the vector width; the loops the compiler vectorizes itself pick up the
// level's instructions from the pragma.
//
// Needs, from the including file: Layer, matmul() (linalg.h), qmatmul() (qgemm.h), pmatmul()
// (packed_gemm.h), <algorithm>,
// <cstring>, <limits>.
#if !defined(VISMEM_MN_LEVEL)
#error "mobilenet_kernels.inl is included by mobilenet.cpp with VISMEM_MN_LEVEL set"
#endif

constexpr int kV = VISMEM_MN_LEVEL == 2 ? 16 : VISMEM_MN_LEVEL == 1 ? 8 : 4;

// C = bias (then C += A B^T) instead of C = A B^T (then C += bias): sgemm
// with beta = 1 skips OpenBLAS's pass that zeroes C, and the bias is added in
// that same write (sgemm_beta was 4-8% of the network's time on Zen 3).
// o[r, j] = b[j] for r < rows, j < cols; rows are ld apart.
void fill_bias(float* __restrict o, int64_t rows, int cols, int64_t ld, const float* __restrict b) {
  for (int64_t r = 0; r < rows; ++r, o += ld) std::memcpy(o, b, sizeof(float) * cols);
}
// o[r, j] = clamp(o[r, j]) (the fused activation), skipped when there is none.
void clamp_rows(float* __restrict o, int64_t rows, int cols, int64_t ld, float lo, float hi) {
  if (lo == -std::numeric_limits<float>::infinity() && hi == std::numeric_limits<float>::infinity()) return;
  for (int64_t r = 0; r < rows; ++r, o += ld)
    for (int j = 0; j < cols; ++j) o[j] = std::min(std::max(o[j], lo), hi);
}

// 1x1 stride-1 conv as one matmul over pixel rows [p0, p1) (of every image in
// the group: NHWC images back to back are one [pixels, ci] matrix) and output
// channels [n0, n1): out[p, o] = sum_i in[p, i] * w[o, i] + b[o].
void conv_pointwise(const Layer& L, const float* in, float* out, int64_t p0, int64_t p1, int n0, int n1) {
  const int ci = L.in.c, co = L.out_shape.c;
  // in: [pixels, ci]; w: [co, ci]; out: [pixels, co]
  if (!L.q.empty()) {  // int8: bias and the fused activation in qmatmul's epilogue
    QuantEpilogue epi;
    epi.bias = L.b.data();
    epi.lo = L.lo;
    epi.hi = L.hi;
    qmatmul(p1 - p0, in + p0 * ci, ci, L.q, n0, n1, out + p0 * co, co, epi);
    return;
  }
  if (!L.p.empty()) {  // weights packed at load: the bias is pmatmul's starting value
    pmatmul(p1 - p0, in + p0 * ci, ci, L.p, n0, n1, L.b.data(), out + p0 * co, co);
    clamp_rows(out + p0 * co + n0, p1 - p0, n1 - n0, co, L.lo, L.hi);
    return;
  }
  fill_bias(out + p0 * co + n0, p1 - p0, n1 - n0, co, L.b.data() + n0);
  matmul(p1 - p0, n1 - n0, ci, in + p0 * ci, ci, L.w.data() + int64_t{n0} * ci, ci, out + p0 * co + n0, co,
         /*b_transposed=*/true, 1.0f, /*beta=*/1.0f);
  clamp_rows(out + p0 * co + n0, p1 - p0, n1 - n0, co, L.lo, L.hi);
}

// Any other conv, output rows [y0, y1): im2col tiles of L.tile_rows() rows, then matmul.
void conv_im2col(const Layer& L, const float* in, float* out, int y0, int y1, float* col) {
  const int ih = L.in.h, iw = L.in.w, ci = L.in.c, ow = L.out_shape.w, co = L.out_shape.c;
  const int64_t k = L.k();
  for (int ty = y0; ty < y1; ty += L.tile_rows()) {
    const int rows = std::min(L.tile_rows(), y1 - ty);
    // col: [rows*ow, kh*kw*ci], zero where the window hangs over the padding
    for (int r = 0; r < rows; ++r) {
      const int oy = ty + r;
      for (int ox = 0; ox < ow; ++ox) {
        float* __restrict dst = col + (int64_t{r} * ow + ox) * k;
        const int ix0 = ox * L.sw - L.pad_left;
        const bool inside_x = ix0 >= 0 && ix0 + (L.kw - 1) * L.dw < iw;
        for (int ky = 0; ky < L.kh; ++ky, dst += int64_t{L.kw} * ci) {
          const int iy = oy * L.sh - L.pad_top + ky * L.dh;
          if (iy < 0 || iy >= ih) {
            std::fill(dst, dst + int64_t{L.kw} * ci, 0.0f);
          } else if (inside_x && L.dw == 1) {  // the window's row is contiguous in the input
            const float* __restrict src = in + (int64_t{iy} * iw + ix0) * ci;
            for (int64_t j = 0; j < int64_t{L.kw} * ci; ++j) dst[j] = src[j];
          } else {
            for (int kx = 0; kx < L.kw; ++kx) {
              const int ix = ix0 + kx * L.dw;
              const float* __restrict src = in + (int64_t{iy} * iw + ix) * ci;
              for (int j = 0; j < ci; ++j) dst[kx * ci + j] = ix >= 0 && ix < iw ? src[j] : 0.0f;
            }
          }
        }
      }
    }
    // out rows [ty, ty+rows): [rows*ow, co] = col [rows*ow, k] x w [co, k]^T
    float* o = out + int64_t{ty} * ow * co;
    if (!L.p.empty()) {
      pmatmul(int64_t{rows} * ow, col, k, L.p, 0, co, L.b.data(), o, co);
    } else {
      fill_bias(o, int64_t{rows} * ow, co, co, L.b.data());
      matmul(int64_t{rows} * ow, co, k, col, k, L.w.data(), k, o, co, /*b_transposed=*/true, 1.0f, /*beta=*/1.0f);
    }
    clamp_rows(o, int64_t{rows} * ow, co, co, L.lo, L.hi);
  }
}

// Depthwise conv, any window / multiplier, output rows [y0, y1): channels innermost.
void depthwise_generic(const Layer& L, const float* __restrict in, float* __restrict out, int y0, int y1) {
  const int ih = L.in.h, iw = L.in.w, ci = L.in.c, ow = L.out_shape.w, co = L.out_shape.c, mult = L.mult;
  const float* __restrict w = L.w.data();  // [kh][kw][co]
  for (int oy = y0; oy < y1; ++oy) {
    for (int ox = 0; ox < ow; ++ox) {
      float* __restrict o = out + (int64_t{oy} * ow + ox) * co;  // [co]
      std::memcpy(o, L.b.data(), sizeof(float) * co);
      for (int ky = 0; ky < L.kh; ++ky) {
        const int iy = oy * L.sh - L.pad_top + ky * L.dh;
        if (iy < 0 || iy >= ih) continue;
        for (int kx = 0; kx < L.kw; ++kx) {
          const int ix = ox * L.sw - L.pad_left + kx * L.dw;
          if (ix < 0 || ix >= iw) continue;
          const float* __restrict x = in + (int64_t{iy} * iw + ix) * ci;  // [ci]
          const float* __restrict wk = w + (int64_t{ky} * L.kw + kx) * co;  // [co]
          if (mult == 1) {
            for (int c = 0; c < co; ++c) o[c] += x[c] * wk[c];
          } else {
            for (int c = 0; c < co; ++c) o[c] += x[c / mult] * wk[c];
          }
        }
      }
      for (int c = 0; c < co; ++c) o[c] = std::min(std::max(o[c], L.lo), L.hi);
    }
  }
}

// kV floats: one register of the level (SSE: 4, AVX2: 8, AVX-512: 16).
typedef float vf __attribute__((vector_size(4 * kV)));
inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// Depthwise KxK, multiplier 1, output rows [y0, y1): per block of kV channels
// the K*K weight vectors stay in registers while the row's pixels stream by
// (K = 3: 9 weights + the sum fill 10 of AVX2's 16 registers).
// Channels past the last full block go through depthwise_generic's loop.
template <int K>
void depthwise_k(const Layer& L, const float* __restrict in, float* __restrict out, int y0, int y1) {
  const int ih = L.in.h, iw = L.in.w, c = L.in.c, ow = L.out_shape.w;
  const int sw = L.sw, dw = L.dw, cv = c / kV * kV;
  const vf lo = vf{} + L.lo, hi = vf{} + L.hi;
  const float* wts = L.w.data();  // [K][K][c]
  // Interior pixels (the window inside the row), undilated, go kOut at a
  // time: their overlapping input loads are shared (stride 1: 6 loads for 12
  // FMAs per kernel row instead of 12). Channel blocks are the inner loop, so
  // the pixels' channels are read front to back while the rows stay in cache.
  // Every output is the same sum in the same order either way.
  constexpr int kOut = 4;
  const int in_lo = (L.pad_left + sw - 1) / sw;                    // first ox with ix0 >= 0
  const int in_hi = std::min(ow, (iw - K + L.pad_left) / sw + 1);  // past the last with ix0 + K - 1 < iw
  const bool blocked = dw == 1 && sw <= 2 && in_lo + kOut <= in_hi;
  for (int oy = y0; oy < y1; ++oy) {
    const float* rows[K];  // input rows under the window, nullptr in the padding
    for (int ky = 0; ky < K; ++ky) {
      const int iy = oy * L.sh - L.pad_top + ky * L.dh;
      rows[ky] = iy >= 0 && iy < ih ? in + int64_t{iy} * iw * c : nullptr;  // [iw, c]
    }
    float* __restrict orow = out + int64_t{oy} * ow * c;  // [ow, c]
    auto one = [&](int ox) {
      const int ix0 = ox * sw - L.pad_left;
      for (int c0 = 0; c0 < cv; c0 += kV) {
        vf acc = loadv(L.b.data() + c0);
        for (int ky = 0; ky < K; ++ky) {
          if (!rows[ky]) continue;
          for (int kx = 0; kx < K; ++kx) {
            const int ix = ix0 + kx * dw;
            if (ix >= 0 && ix < iw) acc += loadv(rows[ky] + int64_t{ix} * c + c0) * loadv(wts + (ky * K + kx) * c + c0);
          }
        }
        acc = acc < lo ? lo : acc;
        acc = acc > hi ? hi : acc;
        storev(orow + int64_t{ox} * c + c0, acc);
      }
    };
    int ox = 0;
    if (blocked) {
      for (; ox < in_lo; ++ox) one(ox);
      for (; ox + kOut <= in_hi; ox += kOut) {
        const int64_t ix0 = int64_t{ox} * sw - L.pad_left;
        for (int c0 = 0; c0 < cv; c0 += kV) {
          vf acc[kOut];
          const vf bias = loadv(L.b.data() + c0);
          for (int o = 0; o < kOut; ++o) acc[o] = bias;
          for (int ky = 0; ky < K; ++ky) {
            if (!rows[ky]) continue;
            const float* x = rows[ky] + ix0 * c + c0;
            vf v[(kOut - 1) * 2 + K];
            const int nv = (kOut - 1) * sw + K;
            for (int t = 0; t < nv; ++t) v[t] = loadv(x + int64_t{t} * c);
            for (int kx = 0; kx < K; ++kx) {
              const vf wk = loadv(wts + (ky * K + kx) * c + c0);
              for (int o = 0; o < kOut; ++o) acc[o] += v[o * sw + kx] * wk;
            }
          }
          for (int o = 0; o < kOut; ++o) {
            vf a = acc[o] < lo ? lo : acc[o];
            a = a > hi ? hi : a;
            storev(orow + (ox + o) * int64_t{c} + c0, a);
          }
        }
      }
    }
    for (; ox < ow; ++ox) one(ox);
    if (cv < c) {
      for (int ox = 0; ox < ow; ++ox) {
        float* o = orow + int64_t{ox} * c;
        for (int j = cv; j < c; ++j) {
          float acc = L.b[j];
          for (int ky = 0; ky < K; ++ky) {
            if (!rows[ky]) continue;
            for (int kx = 0; kx < K; ++kx) {
              const int ix = ox * sw - L.pad_left + kx * dw;
              if (ix >= 0 && ix < iw) acc += rows[ky][int64_t{ix} * c + j] * L.w[(ky * K + kx) * c + j];
            }
          }
          o[j] = std::min(std::max(acc, L.lo), L.hi);
        }
      }
    }
  }
}

void depthwise(const Layer& L, const float* in, float* out, int y0, int y1) {
  if (L.mult == 1 && L.kh == 3 && L.kw == 3) return depthwise_k<3>(L, in, out, y0, y1);
  if (L.mult == 1 && L.kh == 5 && L.kw == 5) return depthwise_k<5>(L, in, out, y0, y1);
  depthwise_generic(L, in, out, y0, y1);
}

// TFLite average pool, output rows [y0, y1): the mean over the window's
// in-bounds pixels (padding is not counted).
void avg_pool(const Layer& L, const float* __restrict in, float* __restrict out, int y0, int y1) {
  const int ih = L.in.h, iw = L.in.w, c = L.in.c, ow = L.out_shape.w;
  for (int oy = y0; oy < y1; ++oy) {
    const int ys = std::max(0, oy * L.sh - L.pad_top), ye = std::min(ih, oy * L.sh - L.pad_top + L.kh);
    for (int ox = 0; ox < ow; ++ox) {
      const int xs = std::max(0, ox * L.sw - L.pad_left), xe = std::min(iw, ox * L.sw - L.pad_left + L.kw);
      float* __restrict o = out + (int64_t{oy} * ow + ox) * c;  // [c]
      std::fill(o, o + c, 0.0f);
      for (int y = ys; y < ye; ++y)
        for (int x = xs; x < xe; ++x) {
          const float* __restrict p = in + (int64_t{y} * iw + x) * c;
          for (int j = 0; j < c; ++j) o[j] += p[j];
        }
      const float inv = 1.0f / std::max(1, (ye - ys) * (xe - xs));
      for (int j = 0; j < c; ++j) o[j] = std::min(std::max(o[j] * inv, L.lo), L.hi);
    }
  }
}

void add(const Layer& L, const float* __restrict a, const float* __restrict b, float* __restrict o, int64_t i0,
         int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) o[i] = std::min(std::max(a[i] + b[i], L.lo), L.hi);
}
