// flat_kernels.inl: the exact-search kernels of one vector ISA level, included
// by flat_index.cpp once per level, each time inside its own namespace and
// `#pragma GCC target` region with VISMEM_FLAT_LEVEL set to
//   0: portable (the build's baseline, no FMA or F16C instructions),
//   1: avx2 (AVX2 + FMA + F16C),
//   2: avx512 (F, BW, DQ, VL on top of level 1).
// GCC's C++ front end does not redefine __AVX2__ etc. under a target pragma,
// so the level macro, not the compiler's, picks the code below.
//
// Every level computes the same exact dot product, bit for bit. Definition:
// acc[l] = 0 for 16 lanes; for each block of 16 columns (the last one zero
// padded) acc[l] = fma(q[j+l], x[j+l], acc[l]); then s8[l] = acc[l] + acc[l+8],
// s4[l] = s8[l] + s8[l+4], s2[l] = s4[l] + s4[l+2], dot = s2[0] + s2[1]. fma
// is correctly rounded and + is commutative, so 16 lanes in one AVX-512
// register, in two AVX2 registers or in an array agree exactly. The float16
// conversions are exact (half to float) and round to nearest even (float to
// half) on every level. Scores from the float16 copy are approximate on every
// level (candidates only; the margin in flat_index.cpp covers any order).
//
// Needs, from the including file: kLanes, kQueryGroup, kPrefetch,
// kRowBlockBytes, CandidateSet, and <immintrin.h>, <cmath>, <cstring>.
#if !defined(VISMEM_FLAT_LEVEL)
#error "flat_kernels.inl is included by flat_index.cpp with VISMEM_FLAT_LEVEL set"
#endif

// ---------------------------------------------------------------------------
// float16 conversion.
// ---------------------------------------------------------------------------
#if VISMEM_FLAT_LEVEL >= 1
inline uint16_t to_half(float v) { return _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }
inline float from_half(uint16_t h) { return _cvtsh_ss(h); }
#else
// Round to nearest even, as F16C does (F. Giesen's float_to_half_fast3_rtne):
// NaN stays NaN (quieted), overflow gives infinity, subnormals round in the
// FPU's default mode (nearest even) through one float addition.
inline uint16_t to_half(float v) {
  uint32_t f;
  std::memcpy(&f, &v, 4);
  const uint32_t sign = (f >> 16) & 0x8000u;
  f &= 0x7fffffffu;
  uint32_t o;
  if (f >= 0x477ff000u) {  // at least 65520 (rounds to infinity), infinity or NaN
    o = f > 0x7f800000u ? 0x7e00u | ((f >> 13) & 0x3ffu) : 0x7c00u;
  } else if (f < 0x38800000u) {  // below 2^-14: a float16 subnormal (or zero)
    const uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    float magic, x;
    std::memcpy(&magic, &magic_bits, 4);
    std::memcpy(&x, &f, 4);
    x += magic;
    std::memcpy(&o, &x, 4);
    o -= magic_bits;
  } else {
    const uint32_t odd = (f >> 13) & 1u;
    f += ((15u - 127u) << 23) + 0xfffu;  // rebias; adds just under half an ulp
    f += odd;                            // ... and the last bit: ties go to even
    o = f >> 13;
  }
  return static_cast<uint16_t>(o | sign);
}
inline float from_half(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t f;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    std::memcpy(&f, &v, 4);
    f |= sign;
  } else if (e == 31) {
    f = sign | 0x7f800000u | (m << 13);
  } else {
    f = sign | ((e + 112u) << 23) | (m << 13);
  }
  float v;
  std::memcpy(&v, &f, 4);
  return v;
}
#endif

void to_half_n(const float* x, uint16_t* out, int64_t n) {
  int64_t j = 0;
#if VISMEM_FLAT_LEVEL >= 1
  for (; j + 8 <= n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + j), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; j < n; ++j) out[j] = to_half(x[j]);
}

// ---------------------------------------------------------------------------
// The exact dot product (any pointers, any d).
// ---------------------------------------------------------------------------
#if VISMEM_FLAT_LEVEL == 2
inline float reduce16(__m512 a) {
  __m256 lo = _mm512_castps512_ps256(a);
  __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

// reduce16 of 16 vectors at once: lane 4c + j of the result is reduce16(v[4j + c]),
// bit for bit (each level adds the same lane pairs as reduce16's tree).
inline __m512 reduce16x16(const __m512* v) {
  __m512 w[8], y[4], z[2];
  for (int k = 0; k < 8; ++k)  // s8: lanes l and l+8; w[k] = s8(v[2k]) | s8(v[2k+1])
    w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
  for (int m = 0; m < 4; ++m)  // s4: quarters 0+1 of each half; y[m] quarter c = s4(v[4m + c])
    y[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0xDD));
  for (int h = 0; h < 2; ++h)  // s2: elements 0+2, 1+3 of each quarter
    z[h] = _mm512_add_ps(_mm512_shuffle_ps(y[2 * h], y[2 * h + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(y[2 * h], y[2 * h + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // s2[0] + s2[1]
  return _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
}
inline __m512 load_row(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_row(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#elif VISMEM_FLAT_LEVEL == 1
// reduce16 of the 16 lanes lo (0-7) | hi (8-15): the same additions in the same order.
inline float reduce16_avx2(__m256 lo, __m256 hi) {
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#else
inline float reduce16_portable(const float* acc) {
  float s8[8], s4[4], s2[2];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
  return s2[0] + s2[1];
}
#endif

float exact_dot(const float* a, const float* b, int d) {
#if VISMEM_FLAT_LEVEL == 2
  __m512 acc = _mm512_setzero_ps();
  int j = 0;
  for (; j + kLanes <= d; j += kLanes) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), acc);
  if (j < d) {
    __mmask16 m = static_cast<__mmask16>((1u << (d - j)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), acc);
  }
  return reduce16(acc);
#elif VISMEM_FLAT_LEVEL == 1
  // Lanes 0-7 and 8-15 of the 16-lane definition in two registers.
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), hi);
  }
  if (j < d) {
    alignas(32) float ta[kLanes] = {}, tb[kLanes] = {};
    std::memcpy(ta, a + j, sizeof(float) * (d - j));
    std::memcpy(tb, b + j, sizeof(float) * (d - j));
    lo = _mm256_fmadd_ps(_mm256_load_ps(ta), _mm256_load_ps(tb), lo);
    hi = _mm256_fmadd_ps(_mm256_load_ps(ta + 8), _mm256_load_ps(tb + 8), hi);
  }
  return reduce16_avx2(lo, hi);
#else
  float acc[kLanes] = {};
  for (int j = 0; j < d; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      float av = j + l < d ? a[j + l] : 0.0f, bv = j + l < d ? b[j + l] : 0.0f;
      acc[l] = std::fma(av, bv, acc[l]);
    }
  return reduce16_portable(acc);
#endif
}

// ---------------------------------------------------------------------------
// The scan.
// ---------------------------------------------------------------------------

// out[i * NR + r] = dot of query i (q + i * ldq) and row r (x + r * ldx) over
// dp columns (a multiple of 16: rows and queries are zero padded). For float
// rows this is exactly exact_dot: each (query, row) pair has its own
// accumulator and the same operation order; the tile only shares the loads
// (each loaded block of the matrix feeds NQ FMAs, NQ * NR chains hide the FMA
// latency). For float16 rows it is an approximation (candidates only).
template <int NQ, int NR, class T>
inline void dot_tile(const float* q, int64_t ldq, const T* x, int64_t ldx, int dp, float* out) {
#if VISMEM_FLAT_LEVEL == 2
  __m512 acc[NQ][NR];
  for (int i = 0; i < NQ; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int j = 0; j < dp; j += kLanes) {
    __m512 xv[NR];
    for (int r = 0; r < NR; ++r) xv[r] = load_row(x + r * ldx + j);
    for (int i = 0; i < NQ; ++i) {
      __m512 qv = _mm512_loadu_ps(q + i * ldq + j);
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_fmadd_ps(qv, xv[r], acc[i][r]);
    }
  }
  if constexpr (NR == 4) {
    // 16 sums at once, transposed (~3 shuffle/add ops per pair instead of 8,
    // and those share ports with the FMAs); lane 4i + r = pair (i0 + i, r).
    for (int i0 = 0; i0 < NQ; i0 += 4) {
      __m512 v[16];
      for (int r = 0; r < 4; ++r)
        for (int i = 0; i < 4; ++i) v[4 * r + i] = i0 + i < NQ ? acc[i0 + i < NQ ? i0 + i : 0][r] : _mm512_setzero_ps();
      __m512 sums = reduce16x16(v);
      const int m = NQ - i0 < 4 ? NQ - i0 : 4;
      if (m == 4) {
        _mm512_storeu_ps(out + i0 * 4, sums);
      } else {
        _mm512_mask_storeu_ps(out + i0 * 4, static_cast<__mmask16>((1u << (4 * m)) - 1), sums);
      }
    }
  } else {
    for (int i = 0; i < NQ; ++i)
      for (int r = 0; r < NR; ++r) out[i * NR + r] = reduce16(acc[i][r]);
  }
#elif VISMEM_FLAT_LEVEL == 1
  // 16 registers: one query at a time against the NR rows (which stay in L1
  // between queries), two accumulators per pair (lanes 0-7, 8-15).
  for (int i = 0; i < NQ; ++i) {
    __m256 lo[NR], hi[NR];
    for (int r = 0; r < NR; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
    const float* qi = q + i * ldq;
    for (int j = 0; j < dp; j += kLanes) {
      const __m256 qlo = _mm256_loadu_ps(qi + j), qhi = _mm256_loadu_ps(qi + j + 8);
      for (int r = 0; r < NR; ++r) {
        lo[r] = _mm256_fmadd_ps(qlo, load8(x + r * ldx + j), lo[r]);
        hi[r] = _mm256_fmadd_ps(qhi, load8(x + r * ldx + j + 8), hi[r]);
      }
    }
    for (int r = 0; r < NR; ++r) out[i * NR + r] = reduce16_avx2(lo[r], hi[r]);
  }
#else
  for (int i = 0; i < NQ; ++i)
    for (int r = 0; r < NR; ++r) {
      if constexpr (std::is_same_v<T, float>) {
        out[i * NR + r] = exact_dot(q + i * ldq, x + r * ldx, dp);
      } else {
        float s = 0.0f;
        for (int j = 0; j < dp; ++j) s += q[i * ldq + j] * from_half(x[r * ldx + j]);
        out[i * NR + r] = s;
      }
    }
#endif
}

// Streaming 8 rows at once defeats the hardware prefetcher (measured), so
// the scan fetches the next tile's rows itself while computing this one.
template <class T>
inline void prefetch_rows(const T* x, int64_t ld, int64_t rows) {
  const char* p = reinterpret_cast<const char*>(x);
  const int64_t bytes = rows * ld * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

// Pulls the next row block into L2 a slice per tile, so the block's first
// sweep (from memory) overlaps the compute of the current block's sweeps.
struct L2Stream {
  const char* p;
  const char* end;
  int64_t step;
  void advance() {
    for (int64_t o = 0; o < step && p < end; o += 64, p += 64) _mm_prefetch(p, _MM_HINT_T1);
  }
};

// Software prefetch of the next tile: measured on the AVX-512 Xeon (batch 4:
// 11.4 vs 17-18 ms/query without). On the AVX2 EPYC (Zen 3) it costs instead
// (one thread, batch 1, d = 1024: f32 14.4 GB/s with it, 17.8 without), where
// the hardware prefetcher keeps up once each 4 KB page is read front to back
// (below), so only the AVX-512 level issues it.
constexpr bool kTilePrefetch = kPrefetch && VISMEM_FLAT_LEVEL == 2;

// One group of G queries against rows [r, rend), 4 rows per tile (G * 4
// accumulators, at most 24 of the 32 vector registers). Rows shorter than a
// 4 KB page go to the tiles interleaved: with m rows per page, tile t of each
// run of 4m rows takes rows t, t + m, t + 2m, t + 3m, so every page the tile
// touches is read front to back by one stream, as the hardware prefetcher
// expects (four rows from one page, read side by side, defeat it: float16
// rows at d = 1024 streamed at 11.9 GB/s that way and 16.0 interleaved, one
// Zen 3 thread). The order does not matter to the results.
template <int G, class T, class Sink>
inline void group_tiles(const float* qi, int64_t ld, int dp, const T* X, int64_t r, int64_t rend, int64_t r1,
                        int64_t i, L2Stream& l2, Sink& sink) {
  float out[8 * 4];
  // The AVX-512 level keeps the order its prefetch was tuned with (m = 1).
  const int64_t m =
      kTilePrefetch ? 1 : std::max<int64_t>(1, 4096 / (ld * static_cast<int64_t>(sizeof(T))));
  for (; r + 4 * m <= rend; r += 4 * m)
    for (int64_t t = 0; t < m; ++t) {
      if (kTilePrefetch) prefetch_rows(X + (r + 4) * ld, ld, std::min<int64_t>(4, r1 - r - 4));  // m = 1
      l2.advance();
      dot_tile<G, 4>(qi, ld, X + (r + t) * ld, m * ld, dp, out);
      for (int a = 0; a < G; ++a)
        for (int b = 0; b < 4; ++b) sink(i + a, r + t + b * m, out[a * 4 + b]);
    }
  for (; r + 4 <= rend; r += 4) {
    l2.advance();
    dot_tile<G, 4>(qi, ld, X + r * ld, ld, dp, out);
    for (int a = 0; a < G; ++a)
      for (int b = 0; b < 4; ++b) sink(i + a, r + b, out[a * 4 + b]);
  }
  for (; r < rend; ++r) {
    dot_tile<G, 1>(qi, ld, X + r * ld, ld, dp, out);
    for (int a = 0; a < G; ++a) sink(i + a, r, out[a]);
  }
}

// Calls sink(query, row, dot) for every query in [0, nq) and row in [r0, r1).
// Rows go in blocks that stay in L2 (read from memory once per search); for
// each block the queries go in groups of up to kQueryGroup (kept in L1), each
// group sweeping the block's rows 4 at a time.
template <class T, class Sink>
void scan_rows(const float* q, int64_t nq, int64_t ld, const T* X, int64_t r0, int64_t r1, Sink&& sink) {
  const int dp = static_cast<int>(ld);
  const int64_t block = std::max<int64_t>(4, kRowBlockBytes / (ld * static_cast<int64_t>(sizeof(T))) / 4 * 4);
  if (kTilePrefetch) prefetch_rows(X + r0 * ld, ld, std::min<int64_t>(4, r1 - r0));
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(r1, rb + block);
    // Balanced groups (8 queries: 4 + 4, not 6 + 2).
    const int64_t groups = (nq + kQueryGroup - 1) / kQueryGroup;
    const int64_t next_bytes = (std::min(r1, re + block) - re) * ld * static_cast<int64_t>(sizeof(T));
    const int64_t steps = groups * ((re - rb) / 4 + 1);
    // One group streams anyway (the tile prefetch covers it).
    L2Stream l2{reinterpret_cast<const char*>(X + re * ld),
                reinterpret_cast<const char*>(X + re * ld) + (groups > 1 ? next_bytes : 0),
                (next_bytes / steps + 64) / 64 * 64};
    for (int64_t gi = 0, i = 0; gi < groups; ++gi) {
      const int g = static_cast<int>((nq - i) / (groups - gi) + ((nq - i) % (groups - gi) ? 1 : 0));
      const float* qi = q + i * ld;
      switch (g) {
        case 1: group_tiles<1>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
        case 2: group_tiles<2>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
        case 3: group_tiles<3>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
        case 4: group_tiles<4>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
        case 5: group_tiles<5>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
        default: group_tiles<6>(qi, ld, dp, X, rb, re, r1, i, l2, sink); break;
      }
      i += g;
    }
  }
}

// Offers rows rb + b (b < nr) with sgemm scores s[b] to the candidate set,
// skipping deleted rows (key < 0).
inline void push_scores(CandidateSet& c, const float* s, int64_t nr, int64_t rb, const int64_t* K) {
  int64_t b = 0;
#if VISMEM_FLAT_LEVEL == 2
  for (; b + 16 <= nr; b += 16) {
    __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + b), _mm512_set1_ps(c.floor()), _CMP_GE_OQ);
    while (hit) {
      int l = __builtin_ctz(hit);
      hit &= hit - 1;
      if (K[rb + b + l] >= 0) c.push(s[b + l], rb + b + l);
    }
  }
#elif VISMEM_FLAT_LEVEL == 1
  for (; b + 8 <= nr; b += 8) {
    int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + b), _mm256_set1_ps(c.floor()), _CMP_GE_OQ));
    while (hit) {
      int l = __builtin_ctz(hit);
      hit &= hit - 1;
      if (K[rb + b + l] >= 0) c.push(s[b + l], rb + b + l);
    }
  }
#endif
  for (; b < nr; ++b)
    if (K[rb + b] >= 0) c.push(s[b], rb + b);
}
