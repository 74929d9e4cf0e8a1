#include "flat_index.h"

// GCC 12's AVX-512 headers trip -Wuninitialized on their own
// _mm256_undefined_pd() when inlined (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "error.h"
#include "linalg.h"

namespace vismem {
namespace {

constexpr int kLanes = 16;
// Scan tunables, picked by A/B runs (two builds in one process, alternating,
// best of 5-9, 1 thread; N = 300k, d = 384 and N = 150k, d = 1024):
// - software prefetch of the next 4-row tile: batch 4 at 11.4 vs 17-18 ms/query
//   without it (streaming several rows at once defeats the hardware prefetcher);
// - rows in L2-sized blocks, each swept by groups of up to 6 queries (6 x 4
//   tiles): 20% faster than 4 x 4 tiles over L2-sized query chunks at batch
//   >= 256, d = 384 (neutral at d = 1024); the block size barely matters
//   (256 KB-1 MB); the transposed 16-sum reduction (reduce16x16): 13-15%;
// - streaming the next row block into L2 while several query groups sweep
//   the current one (L2Stream): 10-15% at batches 8-64, d = 384 (N = 1.28M,
//   2 threads); neutral at d = 1024.
constexpr int kQueryGroup = 6;
constexpr bool kPrefetch = true;
constexpr int64_t kRowBlockBytes = 512 << 10;
constexpr float kInf = std::numeric_limits<float>::infinity();

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---------------------------------------------------------------------------
// The exact dot product. Definition (every implementation below must match it
// bit for bit): acc[l] = 0 for 16 lanes; for each block of 16 columns (the last
// one zero padded) acc[l] = fma(q[j+l], x[j+l], acc[l]); then
// s8[l] = acc[l] + acc[l+8], s4[l] = s8[l] + s8[l+4], s2[l] = s4[l] + s4[l+2],
// dot = s2[0] + s2[1]. fma is correctly rounded and + is commutative, so the
// AVX-512 and the portable versions agree exactly.
// ---------------------------------------------------------------------------
#if defined(__AVX512F__)
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
#endif

[[maybe_unused]] float reduce16_portable(const float* acc) {
  float s8[8], s4[4], s2[2];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
  return s2[0] + s2[1];
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
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
#endif

// Any pointers, any d (masked tail).
float exact_dot(const float* a, const float* b, int d) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  int j = 0;
  for (; j + kLanes <= d; j += kLanes) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), acc);
  if (j < d) {
    __mmask16 m = static_cast<__mmask16>((1u << (d - j)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), acc);
  }
  return reduce16(acc);
#elif defined(__AVX2__) && defined(__FMA__)
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

#if defined(__F16C__)
inline uint16_t to_half(float v) { return _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }
inline float from_half(uint16_t h) { return _cvtsh_ss(h); }
#endif

#if defined(__AVX512F__)
inline __m512 load_row(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_row(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

// out[i * NR + r] = dot of query i (q + i * ldq) and row r (x + r * ldx) over
// dp columns (a multiple of 16: rows and queries are zero padded). For float
// rows this is exactly exact_dot: each (query, row) pair has its own
// accumulator and the same operation order; the tile only shares the loads
// (each loaded block of the matrix feeds NQ FMAs, NQ * NR chains hide the FMA
// latency). For float16 rows it is an approximation (candidates only).
template <int NQ, int NR, class T>
inline void dot_tile(const float* q, int64_t ldq, const T* x, int64_t ldx, int dp, float* out) {
#if defined(__AVX512F__)
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
#elif defined(__AVX2__) && defined(__FMA__)
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
#if defined(__F16C__)
        float s = 0.0f;
        for (int j = 0; j < dp; ++j) s += q[i * ldq + j] * from_half(x[r * ldx + j]);
        out[i * NR + r] = s;
#endif
      }
    }
#endif
}

// Streaming 8 rows at once defeats the hardware prefetcher (measured), so
// the scan fetches the next tile's rows itself while computing this one.
template <class T>
inline void prefetch_rows(const T* x, int64_t ld, int64_t rows) {
#if defined(__SSE__)
  const char* p = reinterpret_cast<const char*>(x);
  const int64_t bytes = rows * ld * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
#endif
}

// One group of G queries against rows [r, rend), 4 rows per tile (G * 4
// accumulators, at most 24 of the 32 vector registers).
// Pulls the next row block into L2 a slice per tile, so the block's first
// sweep (from memory) overlaps the compute of the current block's sweeps.
struct L2Stream {
  const char* p;
  const char* end;
  int64_t step;
  void advance() {
#if defined(__SSE__)
    for (int64_t o = 0; o < step && p < end; o += 64, p += 64) _mm_prefetch(p, _MM_HINT_T1);
#endif
  }
};

template <int G, class T, class Sink>
inline void group_tiles(const float* qi, int64_t ld, int dp, const T* X, int64_t r, int64_t rend, int64_t r1,
                        int64_t i, L2Stream& l2, Sink& sink) {
  float out[8 * 4];
  for (; r + 4 <= rend; r += 4) {
    if (kPrefetch) prefetch_rows(X + (r + 4) * ld, ld, std::min<int64_t>(4, r1 - r - 4));
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
  if (kPrefetch) prefetch_rows(X + r0 * ld, ld, std::min<int64_t>(4, r1 - r0));
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

// ---------------------------------------------------------------------------
// Selection.
// ---------------------------------------------------------------------------
struct Hit {
  float dist;
  int64_t key;
};
inline bool hit_less(const Hit& a, const Hit& b) { return a.dist < b.dist || (a.dist == b.dist && a.key < b.key); }

// The k smallest (dist, key) pairs pushed so far (plus some extra until pruned).
class TopK {
 public:
  explicit TopK(int k) : k_(k), cap_(2 * static_cast<size_t>(k) + 32) { buf_.reserve(cap_); }
  void push(float dist, int64_t key) {
    if (dist > worst_) return;  // equal distances may still win on key
    buf_.push_back({dist, key});
    if (buf_.size() >= cap_) prune();
  }
  float worst() const { return worst_; }
  std::vector<Hit>& hits() { return buf_; }

 private:
  void prune() {
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), hit_less);
    buf_.resize(k_);
    worst_ = buf_[k_ - 1].dist;
  }
  int k_;
  size_t cap_;
  float worst_ = kInf;
  std::vector<Hit> buf_;
};

// The largest float <= v (so a float threshold never cuts into the margin).
float lower_float(double v) {
  float f = static_cast<float>(v);
  return static_cast<double>(f) > v ? std::nextafter(f, -kInf) : f;
}

struct Cand {
  float score;  // approximate similarity
  int64_t row;
};

// Rows whose approximate score is within `margin` of the k-th best approximate
// score seen so far. With margin >= 2 max |approx - exact| plus the rounding
// of 1 - s, it contains the exact top k (the proof is at its use in search()).
class CandidateSet {
 public:
  CandidateSet(int k, float margin) : k_(k), margin_(margin), cap_(2 * static_cast<size_t>(k) + 64) {}
  float floor() const { return floor_; }
  void push(float score, int64_t row) {
    if (!(score >= floor_)) return;
    buf_.push_back({score, row});
    if (buf_.size() >= cap_) prune();
  }
  std::vector<Cand>& cands() { return buf_; }

 private:
  void prune() {
    auto greater = [](const Cand& a, const Cand& b) { return a.score > b.score; };
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), greater);
    floor_ = std::max(floor_, lower_float(static_cast<double>(buf_[k_ - 1].score) - margin_));
    float f = floor_;
    buf_.erase(std::remove_if(buf_.begin(), buf_.end(), [f](const Cand& c) { return !(c.score >= f); }), buf_.end());
    // Many near-ties (duplicates): grow instead of pruning over and over.
    if (buf_.size() * 2 > cap_) cap_ *= 2;
  }
  int k_;
  float margin_;
  size_t cap_;
  float floor_ = -kInf;
  std::vector<Cand> buf_;
};

void write_row(std::vector<Hit>& hits, int k, float* dist, int64_t* keys) {
  std::sort(hits.begin(), hits.end(), hit_less);
  int m = static_cast<int>(std::min<size_t>(hits.size(), static_cast<size_t>(k)));
  for (int j = 0; j < m; ++j) {
    dist[j] = hits[j].dist;
    keys[j] = hits[j].key;
  }
  for (int j = m; j < k; ++j) {
    dist[j] = kInf;
    keys[j] = -1;
  }
}

// Unit roundoff of float32 and the classic bound gamma_n = n u / (1 - n u) on
// the relative error of an n-term dot product in any summation order.
constexpr double kUnit = 1.0 / (1 << 24);
double gamma_n(int n) { return n * kUnit / (1.0 - n * kUnit); }

// sgemm scan (Scan::blas): 1024-row blocks (4 MB of scores at most per
// thread with 256-query chunks, L2/L3 resident; FAISS uses 1024 x 4096).
constexpr int64_t kBlockRows = 1024;
constexpr int64_t kQueryChunk = 256;
// Scan::automatic. Without AVX-512 the fixed-order kernel is portable code, so
// batches above kScanMaxBatch go to sgemm (+ rescoring). With AVX-512 the
// kernel runs every batch size unless sgemm measures faster (blas_is_faster):
// that depends on the BLAS build and the CPU it detected. OpenBLAS 0.3.21
// takes this Xeon (Sapphire Rapids) for "Prescott" and runs SSE3 sgemm, ~25
// GFLOP/s per core against the kernel's ~75; with OPENBLAS_CORETYPE=SkylakeX
// its sgemm path was ~2x faster than the kernel at batch >= 256.
constexpr int64_t kScanMaxBatch = 8;
constexpr int64_t kBlasMinBatch = 64;
#if defined(__AVX512F__)
constexpr bool kKernelForAll = true;
#else
constexpr bool kKernelForAll = false;
#endif
// Batches up to this scan the float16 copy (memory bound there); larger ones
// are compute bound and scan float32 directly (no rescoring needed).
constexpr int64_t kF16MaxBatch = 8;
// Vectors and queries longer than this are refused: |<q, x>| <= 1e30 then,
// so no partial sum of a dot product can overflow float32.
constexpr double kMaxNorm = 1e15;
constexpr double kWorkPerThread = 4e6;  // multiply-adds that justify one more thread
// Queries per internal pass (bounds per-query state: ~15 MB per thread at k = 100).
constexpr int64_t kSearchChunk = 4096;

// Whether matmul() beats the kernel on a 256-query x 1024-row block of row
// width ld, single-threaded: timed once per width per process (best of 3,
// ~10 ms) and required to win by 25% (the sgemm scan also rescores). Either
// choice returns the same bits; this only picks the faster.
bool blas_is_faster(int64_t ld) {
  static std::mutex mu;
  static std::unordered_map<int64_t, bool> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(ld);
  if (it != known.end()) return it->second;
  const int64_t m = kQueryChunk, rows = kBlockRows;
  std::vector<float> a(static_cast<size_t>(m * ld)), b(static_cast<size_t>(rows * ld)), c(static_cast<size_t>(m * rows));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 13) * 0.01f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7) * 0.01f;
  double t_kernel = 1e30, t_blas = 1e30;
  float sum = 0.0f;
  using clock = std::chrono::steady_clock;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = clock::now();
    scan_rows(a.data(), m, ld, b.data(), 0, rows, [&](int64_t, int64_t, float s) { sum += s; });
    auto t1 = clock::now();
    matmul(m, rows, ld, a.data(), ld, b.data(), ld, c.data(), rows, /*b_transposed=*/true);
    auto t2 = clock::now();
    t_kernel = std::min(t_kernel, std::chrono::duration<double>(t1 - t0).count());
    t_blas = std::min(t_blas, std::chrono::duration<double>(t2 - t1).count());
  }
  volatile float keep = sum + c[0];  // the timed work must not be optimized away
  (void)keep;
  return known[ld] = t_blas < 0.8 * t_kernel;
}

}  // namespace

FlatIndex::FlatIndex(int dim) : FlatIndex(dim, Options{}) {}

FlatIndex::FlatIndex(int dim, Options options)
    : dim_(dim), ld_(static_cast<int>(round_up(dim, kLanes))), options_(options) {
  if (dim <= 0) throw Error("FlatIndex: dimension must be positive, got " + std::to_string(dim));
#if !defined(__F16C__)
  if (options.storage == Storage::f16)
    throw Error("FlatIndex: float16 storage needs a build with F16C (VISMEM_NATIVE on an x86-64-v3 CPU)");
#endif
}

float FlatIndex::distance(const float* q, const float* x, int d) { return 1.0f - exact_dot(q, x, d); }

void FlatIndex::reserve(int64_t n) {
  if (n < 0) throw Error("FlatIndex::reserve: negative count " + std::to_string(n));
  data_.reserve(static_cast<size_t>(n * ld_));
  if (options_.storage == Storage::f16) half_.reserve(static_cast<size_t>(n * ld_));
  keys_.reserve(static_cast<size_t>(n));
  row_of_.reserve(static_cast<size_t>(n));
}

void FlatIndex::add(int64_t n, const float* x, const int64_t* keys) {
  if (n < 0) throw Error("FlatIndex::add: negative count " + std::to_string(n));
  if (n == 0) return;
  if (!x || !keys) throw Error("FlatIndex::add: null vectors or keys");
  // Validate everything first so a rejected batch leaves the index unchanged.
  std::unordered_set<int64_t> batch;
  batch.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (keys[i] < 0) throw Error("FlatIndex::add: key " + std::to_string(keys[i]) + " is negative (-1 marks padding)");
    if (row_of_.count(keys[i]) || !batch.insert(keys[i]).second)
      throw Error("FlatIndex::add: key " + std::to_string(keys[i]) + " is already in use");
  }
  const bool f16 = options_.storage == Storage::f16;
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < dim_; ++j) {
      float v = x[i * dim_ + j];
      if (!std::isfinite(v))
        throw Error("FlatIndex::add: vector " + std::to_string(i) + " (key " + std::to_string(keys[i]) +
                    ") has a non-finite value at column " + std::to_string(j));
      if (f16 && std::fabs(v) > 65504.0f)
        throw Error("FlatIndex::add: vector " + std::to_string(i) + " (key " + std::to_string(keys[i]) +
                    ") has a value beyond float16 range at column " + std::to_string(j));
    }
  for (int64_t i = 0; i < n; ++i) {
    double norm2 = 0.0;
    for (int j = 0; j < dim_; ++j) norm2 += static_cast<double>(x[i * dim_ + j]) * x[i * dim_ + j];
    if (norm2 > kMaxNorm * kMaxNorm)
      throw Error("FlatIndex::add: vector " + std::to_string(i) + " (key " + std::to_string(keys[i]) +
                  ") has norm " + std::to_string(std::sqrt(norm2)) + " (over 1e15: dot products would overflow)");
  }
  const int64_t n0 = size();
  data_.resize(static_cast<size_t>((n0 + n) * ld_), 0.0f);
  if (f16) half_.resize(static_cast<size_t>((n0 + n) * ld_), 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* src = x + i * dim_;
    float* dst = data_.data() + (n0 + i) * ld_;
    std::memcpy(dst, src, sizeof(float) * dim_);
    double norm2 = 0.0;
    for (int j = 0; j < dim_; ++j) norm2 += static_cast<double>(src[j]) * src[j];
    max_norm_ = std::max(max_norm_, std::sqrt(norm2));
#if defined(__F16C__)
    if (f16) {
      uint16_t* h = half_.data() + (n0 + i) * ld_;
      for (int j = 0; j < dim_; ++j) h[j] = to_half(src[j]);
    }
#endif
    keys_.push_back(keys[i]);
    row_of_.emplace(keys[i], n0 + i);
  }
}

int64_t FlatIndex::remove(int64_t n, const int64_t* keys) {
  if (n < 0) throw Error("FlatIndex::remove: negative count " + std::to_string(n));
  if (n > 0 && !keys) throw Error("FlatIndex::remove: null keys");
  const bool f16 = options_.storage == Storage::f16;
  int64_t removed = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(keys[i]);
    if (it == row_of_.end()) continue;
    const int64_t row = it->second, last = size() - 1;
    row_of_.erase(it);
    if (row != last) {
      // Rows are unordered (ties are broken by key, not row), so the last row
      // can fill the hole.
      std::memcpy(data_.data() + row * ld_, data_.data() + last * ld_, sizeof(float) * ld_);
      if (f16) std::memcpy(half_.data() + row * ld_, half_.data() + last * ld_, sizeof(uint16_t) * ld_);
      keys_[row] = keys_[last];
      row_of_[keys_[row]] = row;
    }
    // Zero the vacated row: no copy of a removed vector stays in our buffers.
    std::memset(data_.data() + last * ld_, 0, sizeof(float) * ld_);
    data_.resize(static_cast<size_t>(last * ld_));
    if (f16) {
      std::memset(half_.data() + last * ld_, 0, sizeof(uint16_t) * ld_);
      half_.resize(static_cast<size_t>(last * ld_));
    }
    keys_.pop_back();
    ++removed;
  }
  return removed;
}

bool FlatIndex::reconstruct(int64_t key, float* out) const {
  auto it = row_of_.find(key);
  if (it == row_of_.end()) return false;
  std::memcpy(out, data_.data() + it->second * ld_, sizeof(float) * dim_);
  return true;
}

namespace {
void flat_search_chunk(const FlatRows& rows, int dim_, const FlatIndex::Options& options_, int64_t nq, const float* q,
                       int k, float* distances, int64_t* out_keys, int threads);
}  // namespace

int flat_row_stride(int dim) { return static_cast<int>(round_up(dim, kLanes)); }

bool flat_f16_supported() {
#if defined(__F16C__)
  return true;
#else
  return false;
#endif
}

void flat_to_half(const float* x, uint16_t* out, int64_t n) {
#if defined(__F16C__)
  for (int64_t j = 0; j < n; ++j) out[j] = to_half(x[j]);
#else
  (void)x, (void)out, (void)n;
  throw Error("float16 storage needs a build with F16C (VISMEM_NATIVE on an x86-64-v3 CPU)");
#endif
}

void FlatIndex::search(int64_t nq, const float* q, int k, float* distances, int64_t* out_keys, int threads) const {
  FlatRows rows{data_.data(), options_.storage == Storage::f16 ? half_.data() : nullptr, keys_.data(), size(), max_norm_};
  flat_search(rows, dim_, options_, nq, q, k, distances, out_keys, threads);
}

void flat_search(const FlatRows& rows, int dim, const FlatIndex::Options& options, int64_t nq, const float* q, int k,
                 float* distances, int64_t* out_keys, int threads) {
  const int dim_ = dim;
  if (nq < 0) throw Error("search: negative query count " + std::to_string(nq));
  if (k < 0) throw Error("search: negative k " + std::to_string(k));
  if (threads < 0) throw Error("search: negative thread count " + std::to_string(threads));
  if (nq == 0 || k == 0) return;
  if (!q || !distances || !out_keys) throw Error("search: null queries or outputs");

  // Validate every query before writing any output.
  for (int64_t i = 0; i < nq; ++i) {
    double norm2 = 0.0;
    for (int j = 0; j < dim_; ++j) {
      float v = q[i * dim_ + j];
      if (!std::isfinite(v))
        throw Error("search: query " + std::to_string(i) + " has a non-finite value at column " +
                    std::to_string(j));
      norm2 += static_cast<double>(v) * v;
    }
    if (norm2 > kMaxNorm * kMaxNorm)
      throw Error("search: query " + std::to_string(i) + " has norm " + std::to_string(std::sqrt(norm2)) +
                  " (over 1e15: dot products would overflow)");
  }
  if (rows.n == 0) {
    std::vector<Hit> none;
    for (int64_t i = 0; i < nq; ++i) write_row(none, k, distances + i * k, out_keys + i * k);
    return;
  }
  // Per-query state (top-k buffers per thread, the padded copy) grows with the
  // batch; chunks bound it at a cost of one extra pass over the matrix per
  // chunk (~1% of a compute-bound chunk's time).
  for (int64_t i0 = 0; i0 < nq; i0 += kSearchChunk) {
    const int64_t m = std::min(kSearchChunk, nq - i0);
    flat_search_chunk(rows, dim_, options, m, q + i0 * dim_, k, distances + i0 * k, out_keys + i0 * k, threads);
  }
}

namespace {

// flat_search() after validation, for at most kSearchChunk queries.
void flat_search_chunk(const FlatRows& rows, int dim_, const FlatIndex::Options& options_, int64_t nq, const float* q,
                       int k, float* distances, int64_t* out_keys, int threads) {
  // Padded copy of the queries: kernels read whole 16-column blocks.
  const int ld = static_cast<int>(round_up(dim_, kLanes));
  const int ld_ = ld;
  const double max_norm_ = rows.max_norm;
  std::vector<float> qp(static_cast<size_t>(nq * ld), 0.0f);
  std::vector<double> qnorm(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) {
    double norm2 = 0.0;
    for (int j = 0; j < dim_; ++j) {
      float v = q[i * dim_ + j];
      qp[i * ld + j] = v;
      norm2 += static_cast<double>(v) * v;
    }
    qnorm[i] = std::sqrt(norm2);
  }
  const int64_t n = rows.n;

  int nthreads = threads ? threads : default_threads();
  const double work = static_cast<double>(n) * nq * dim_;
  nthreads = static_cast<int>(std::max<double>(1.0, std::min<double>(nthreads, work / kWorkPerThread)));
  nthreads = static_cast<int>(std::min<int64_t>(nthreads, (n + kBlockRows - 1) / kBlockRows * 4));
  nthreads = std::max(nthreads, 1);
  const float* X = rows.x;
  const int64_t* K = rows.keys;
  const bool f16 = rows.half != nullptr;

  // Rows [row_begin(t), row_begin(t+1)) belong to worker t.
  auto row_begin = [&](int t, int nt) { return n * t / nt; };

  FlatIndex::Scan scan = options_.scan;
  if (scan == FlatIndex::Scan::automatic) {
    if (!kKernelForAll) {
      scan = nq <= kScanMaxBatch ? FlatIndex::Scan::kernel : FlatIndex::Scan::blas;
    } else {
      // Only with single-threaded BLAS: the comparison is one core against one core.
      scan = nq >= kBlasMinBatch && blas_threads() == 1 && blas_is_faster(ld_) ? FlatIndex::Scan::blas : FlatIndex::Scan::kernel;
    }
  }
  const bool use_f16 = f16 && scan == FlatIndex::Scan::kernel && nq <= kF16MaxBatch;

  if (scan == FlatIndex::Scan::kernel && !use_f16) {
    // Direct scan: exact distances straight from the kernel, one pass over the matrix.
    std::vector<std::vector<TopK>> part(nthreads, std::vector<TopK>(static_cast<size_t>(nq), TopK(k)));
#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      std::vector<TopK>& top = part[t];
      scan_rows(qp.data(), nq, ld, X, row_begin(t, nt), row_begin(t + 1, nt),
                [&](int64_t i, int64_t row, float dot) {
                  if (K[row] >= 0) top[i].push(1.0f - dot, K[row]);
                });
    }
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<Hit> all;
      for (int t = 0; t < nthreads; ++t) {
        auto& h = part[t][i].hits();
        all.insert(all.end(), h.begin(), h.end());
      }
      write_row(all, k, distances + i * k, out_keys + i * k);
    }
    return;
  }

  // Candidate selection on approximate scores (sgemm, or the float16 copy),
  // then exact rescoring. Margin: the approximate and the exact dot each lie
  // within err of the true dot, so |approx - exact| <= E, and a row whose
  // approximate score is below (k-th best approximate) - 2E - slack has an
  // exact distance strictly above k other rows' (slack covers the rounding
  // of 1 - s to float: 8 ulps of |1 - s| <= 1 + |q| max|x|).
  std::vector<float> margin(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) {
    const double qx = qnorm[i] * max_norm_ * 1.01;
    double e = 2.0 * gamma_n(dim_) * qx;  // sgemm vs exact: each within gamma_d * sum |q_j x_j|
    if (use_f16) {
      // float16 rounding of x: relative 2^-11, or absolute 2^-25 when subnormal.
      const double q1 = qnorm[i] * std::sqrt(static_cast<double>(dim_));
      e = (std::ldexp(1.0, -11) + 2.01 * gamma_n(dim_)) * qx + 1.01 * std::ldexp(1.0, -25) * q1;
    }
    const double slack = std::ldexp(1.0, -20) * (1.0 + qx);
    margin[i] = static_cast<float>((2.0 * e + slack) * 1.001);
  }

  std::vector<std::vector<CandidateSet>> part(static_cast<size_t>(nthreads));
  for (auto& p : part) {
    p.reserve(static_cast<size_t>(nq));
    for (int64_t i = 0; i < nq; ++i) p.emplace_back(k, margin[i]);
  }

  if (use_f16) {
    const uint16_t* H = rows.half;
#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      std::vector<CandidateSet>& cs = part[t];
      scan_rows(qp.data(), nq, ld, H, row_begin(t, nt), row_begin(t + 1, nt),
                [&](int64_t i, int64_t row, float dot) {
                  if (K[row] >= 0) cs[i].push(dot, row);
                });
    }
  } else {
    // matmul() from several of our threads is only right with single-threaded
    // BLAS: OpenBLAS (pthreads) would give each call blas_threads() workers.
    // So when BLAS is multi-threaded, one worker of ours feeds it whole blocks.
    const int workers = blas_threads() > 1 ? 1 : nthreads;
#pragma omp parallel num_threads(workers)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      std::vector<CandidateSet>& cs = part[t];
      const int64_t r0 = row_begin(t, nt), r1 = row_begin(t + 1, nt);
      const int64_t qc = std::min<int64_t>(kQueryChunk, nq);
      std::vector<float> scores(static_cast<size_t>(qc * kBlockRows));
      for (int64_t rb = r0; rb < r1; rb += kBlockRows) {
        const int64_t nr = std::min<int64_t>(kBlockRows, r1 - rb);
        for (int64_t i0 = 0; i0 < nq; i0 += qc) {
          const int64_t m = std::min<int64_t>(qc, nq - i0);
          matmul(m, nr, dim_, qp.data() + i0 * ld, ld, X + rb * ld, ld, scores.data(), nr, /*b_transposed=*/true);
          for (int64_t a = 0; a < m; ++a) {
            CandidateSet& c = cs[i0 + a];
            const float* s = scores.data() + a * nr;
#if defined(__AVX512F__)
            int64_t b = 0;
            for (; b + 16 <= nr; b += 16) {
              __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + b), _mm512_set1_ps(c.floor()), _CMP_GE_OQ);
              while (hit) {
                int l = __builtin_ctz(hit);
                hit &= hit - 1;
                if (K[rb + b + l] >= 0) c.push(s[b + l], rb + b + l);
              }
            }
            for (; b < nr; ++b)
              if (K[rb + b] >= 0) c.push(s[b], rb + b);
#else
            for (int64_t b = 0; b < nr; ++b)
              if (K[rb + b] >= 0) c.push(s[b], rb + b);
#endif
          }
        }
      }
    }
  }

  // Merge the workers' candidates, keep those within the margin of the global
  // k-th approximate score, rescore them exactly, order by (distance, key).
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 16)
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<Cand> all;
    for (int t = 0; t < nthreads; ++t) {
      auto& c = part[t][i].cands();
      all.insert(all.end(), c.begin(), c.end());
    }
    if (static_cast<int64_t>(all.size()) > k) {
      auto greater = [](const Cand& a, const Cand& b) { return a.score > b.score; };
      std::nth_element(all.begin(), all.begin() + (k - 1), all.end(), greater);
      const float f = lower_float(static_cast<double>(all[k - 1].score) - margin[i]);
      all.erase(std::remove_if(all.begin(), all.end(), [f](const Cand& c) { return !(c.score >= f); }), all.end());
    }
    std::vector<Hit> hits;
    hits.reserve(all.size());
    const float* qi = qp.data() + i * ld;
    for (const Cand& c : all) hits.push_back({1.0f - exact_dot(qi, X + c.row * ld, ld), K[c.row]});
    write_row(hits, k, distances + i * k, out_keys + i * k);
  }
}

}  // namespace

}  // namespace vismem
