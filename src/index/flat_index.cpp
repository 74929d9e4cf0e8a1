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

#include "cpu.h"
#include "error.h"
#include "linalg.h"

namespace vismem {
namespace {

constexpr int kLanes = 16;
// Scan tunables, picked by A/B runs on the AVX-512 Xeon (two builds in one
// process, alternating, best of 5-9, 1 thread; N = 300k, d = 384 and N =
// 150k, d = 1024); the AVX2 level's differences are in flat_kernels.inl:
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

// ---------------------------------------------------------------------------
// The kernels, compiled once per vector ISA level (flat_kernels.inl) and
// chosen at run time by cpu_isa(); every level returns the same bits.
// ---------------------------------------------------------------------------
#define VISMEM_FLAT_LEVEL 0
namespace portable {
#include "flat_kernels.inl"
}  // namespace portable
#undef VISMEM_FLAT_LEVEL

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define VISMEM_FLAT_LEVEL 1
namespace avx2 {
#include "flat_kernels.inl"
}  // namespace avx2
#undef VISMEM_FLAT_LEVEL
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#define VISMEM_FLAT_LEVEL 2
namespace avx512 {
#include "flat_kernels.inl"
}  // namespace avx512
#undef VISMEM_FLAT_LEVEL
#pragma GCC pop_options

float exact_dot(Isa isa, const float* a, const float* b, int d) {
  switch (isa) {
    case Isa::avx512: return avx512::exact_dot(a, b, d);
    case Isa::avx2: return avx2::exact_dot(a, b, d);
    default: return portable::exact_dot(a, b, d);
  }
}

template <class T, class Sink>
void scan_rows(Isa isa, const float* q, int64_t nq, int64_t ld, const T* X, int64_t r0, int64_t r1, Sink&& sink) {
  switch (isa) {
    case Isa::avx512: return avx512::scan_rows(q, nq, ld, X, r0, r1, sink);
    case Isa::avx2: return avx2::scan_rows(q, nq, ld, X, r0, r1, sink);
    default: return portable::scan_rows(q, nq, ld, X, r0, r1, sink);
  }
}

void push_scores(Isa isa, CandidateSet& c, const float* s, int64_t nr, int64_t rb, const int64_t* K) {
  switch (isa) {
    case Isa::avx512: return avx512::push_scores(c, s, nr, rb, K);
    case Isa::avx2: return avx2::push_scores(c, s, nr, rb, K);
    default: return portable::push_scores(c, s, nr, rb, K);
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
// Scan::automatic. Without AVX-512 (AVX2: 16 vector registers; portable:
// no FMA instructions) batches above kScanMaxBatch go to sgemm (+
// rescoring). With AVX-512 the kernel runs every batch size unless sgemm
// measures faster (blas_is_faster): that depends on the BLAS build and the
// CPU it detected. OpenBLAS 0.3.21 takes this Xeon (Sapphire Rapids) for
// "Prescott" and runs SSE3 sgemm, ~25 GFLOP/s per core against the kernel's
// ~75; with OPENBLAS_CORETYPE=SkylakeX its sgemm path was ~2x faster than the
// kernel at batch >= 256.
constexpr int64_t kScanMaxBatch = 8;
constexpr int64_t kBlasMinBatch = 64;
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
    scan_rows(cpu_isa(), a.data(), m, ld, b.data(), 0, rows, [&](int64_t, int64_t, float s) { sum += s; });
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
  if (options.storage == Storage::f16 && !flat_f16_supported())
    throw Error("FlatIndex: float16 storage needs a CPU with F16C (x86-64-v3)");
}

float FlatIndex::distance(const float* q, const float* x, int d) { return 1.0f - exact_dot(cpu_isa(), q, x, d); }

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
    if (f16) flat_to_half(src, half_.data() + (n0 + i) * ld_, dim_);
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

// The float16 copy pays only where the CPU converts it in hardware; the
// portable conversion (which any level can run) gives the same bits.
bool flat_f16_supported() { return cpu_features().f16c; }

void flat_to_half(const float* x, uint16_t* out, int64_t n) {
  switch (cpu_isa()) {
    case Isa::avx512: return avx512::to_half_n(x, out, n);
    case Isa::avx2: return avx2::to_half_n(x, out, n);
    default: return portable::to_half_n(x, out, n);
  }
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

  // One level for the whole search, even if set_isa() runs meanwhile.
  const Isa isa = cpu_isa();
  FlatIndex::Scan scan = options_.scan;
  if (scan == FlatIndex::Scan::automatic) {
    if (isa == Isa::portable) {
      // Without FMA instructions the fixed order costs a libm fmaf per
      // multiply-add: sgemm (which picks its own kernels by CPU) nominates
      // and only the candidates pay for it (batch 1, 20k x 1024: 28 q/s
      // against 8 for the portable kernel; its float16 scan, scalar
      // conversions, 12). Scan::kernel still runs the portable kernels.
      scan = FlatIndex::Scan::blas;
    } else if (isa != Isa::avx512) {
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
      scan_rows(isa, qp.data(), nq, ld, X, row_begin(t, nt), row_begin(t + 1, nt),
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
      scan_rows(isa, qp.data(), nq, ld, H, row_begin(t, nt), row_begin(t + 1, nt),
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
            push_scores(isa, cs[i0 + a], scores.data() + a * nr, nr, rb, K);
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
    for (const Cand& c : all) hits.push_back({1.0f - exact_dot(isa, qi, X + c.row * ld, ld), K[c.row]});
    write_row(hits, k, distances + i * k, out_keys + i * k);
  }
}

}  // namespace

}  // namespace vismem
