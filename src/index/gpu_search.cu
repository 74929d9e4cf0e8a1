// The CUDA path of exact search (gpu_search.h): fixed-order distances and a
// block-wide sort per 2048 rows, then sort-based reduction of the candidates.
#include "gpu_search.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "error.h"

namespace vismem {

namespace {

// 1024 threads a block, two blocks an SM (<= 32 registers a thread): at batch 1
// and N = 500k the scan has 245 blocks, and it takes about 60 warps an SM of
// loads in flight to keep HBM busy.
constexpr int kThreads = 1024;
constexpr int kSortSize = 2048;    // rows (or candidates) one block sorts in shared memory
constexpr int kLanes = 16;         // the fixed order's lanes: one half-warp
static_assert(kSortSize % (kThreads / kLanes) == 0, "every half-warp must run the same rows per block");
static_assert(kSortSize >= 2 * GpuFlatSearch::kMaxK, "each reduction round must at least halve the candidates");
constexpr int64_t kMaxBlocksY = 65535;  // gridDim.y limit: rows per launch <= 65535 * 2048
constexpr int64_t kQueryChunk = 256;    // queries per pass at most
constexpr int64_t kMaxCandidates = int64_t(1) << 25;  // per pass (12 bytes each): fewer queries where N is huge
constexpr int64_t kMaxScores = int64_t(1) << 28;      // per pass of a batch (4 bytes each)
constexpr int kFusedMaxBatch = 2;  // larger batches: scores, then selection (H200: fused 0.60 ms at 1 query, scores 1.00 at 4)
// The key beside a +inf distance (a deleted row or padding): such entries sort
// last whatever their key, and the host tells them by the distance.
constexpr int64_t kNoKey = std::numeric_limits<int64_t>::max();
constexpr double kMaxNorm = 1e15;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("GPU search: ") + what + ": " + cudaGetErrorString(e));
}

// Ascending by (distance, key): the order flat_search reports.
__device__ __forceinline__ bool after(float da, int64_t ka, float db, int64_t kb) {
  return da > db || (da == db && ka > kb);
}

// Sorts d[0, kSortSize), k[...] ascending in shared memory (bitonic network).
__device__ void block_sort(float* d, int64_t* k) {
  for (int size = 2; size <= kSortSize; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int t = threadIdx.x; t < kSortSize / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1)), j = i + stride;
        const bool ascending = (i & size) == 0;
        if (after(d[i], k[i], d[j], k[j]) == ascending) {
          const float td = d[i];
          d[i] = d[j];
          d[j] = td;
          const int64_t tk = k[i];
          k[i] = k[j];
          k[j] = tk;
        }
      }
    }
  __syncthreads();
}

// Sorts the block's kSortSize (distance, key) pairs and writes the first kk.
__device__ void sort_and_keep(float* sd, int64_t* sk, int kk, float* out_d, int64_t* out_k) {
  block_sort(sd, sk);
  for (int t = threadIdx.x; t < kk; t += blockDim.x) {
    out_d[t] = sd[t];
    out_k[t] = sk[t];
  }
}

// grid (nq, row blocks of this launch): block (qi, b0 + y) scores rows
// [(b0 + y) * 2048, +2048) for query qi and writes its best kk (distance,
// key), sorted, to out[(qi * nb + b0 + y) * kk] (launches of at most 65535
// row blocks each fill their slice of [nq][nb][kk]). x: rows [n, ld] (ld the
// row stride; dp <= ld the columns summed: dim rounded up to 16, zero
// padded); q: [nq, dp]. Blocks start x first: every query's block of the
// same rows runs side by side, so the rows come from memory once and from L2
// for the other queries.
__global__ void __launch_bounds__(kThreads, 2)
    scan_kernel(const float* __restrict__ x, const int64_t* __restrict__ keys, int64_t n, int64_t b0, int ld, int dp,
                const float* __restrict__ q, int kk, int64_t nb, float* out_d, int64_t* out_k) {
  extern __shared__ float sq[];  // [dp] the query
  __shared__ float sd[kSortSize];
  __shared__ int64_t sk[kSortSize];
  const int qi = blockIdx.x;
  const int64_t b = b0 + blockIdx.y;
  for (int j = threadIdx.x; j < dp; j += blockDim.x) sq[j] = q[int64_t(qi) * dp + j];
  __syncthreads();
  const int lane = threadIdx.x % kLanes, group = threadIdx.x / kLanes;
  const int64_t first = b * kSortSize;
  // Every half-warp runs the same number of iterations (kSortSize is a
  // multiple of the groups), so the shuffles below always have all 32 lanes.
  for (int i = group; i < kSortSize; i += kThreads / kLanes) {
    const int64_t r = first + i;
    float acc = 0.0f;
    if (r < n) {
      const float* xr = x + r * ld;
#pragma unroll 8  // the loads do not wait on acc: eight of them in flight
      for (int j = lane; j < dp; j += kLanes) acc = __fmaf_rn(sq[j], xr[j], acc);
    }
    // The tree of flat_index.h: lane l adds lane l ^ 8, then ^ 4, ^ 2, ^ 1
    // (a + b == b + a exactly, so either lane of a pair holds the same sum).
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 8));
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 4));
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 2));
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 1));
    if (lane == 0) {
      const int64_t key = r < n ? keys[r] : -1;
      sd[i] = key >= 0 ? __fsub_rn(1.0f, acc) : INFINITY;
      sk[i] = key >= 0 ? key : kNoKey;
    }
  }
  sort_and_keep(sd, sk, kk, out_d + (int64_t(qi) * nb + b) * kk, out_k + (int64_t(qi) * nb + b) * kk);
}

// grid (blocks, nq): block (b, qi) sorts candidates [b * 2048, +2048) of
// query qi's m (in[qi * m ...]) and writes its best kk to out[(qi * nb + b) * kk].
__global__ void __launch_bounds__(kThreads, 2)
    reduce_kernel(const float* in_d, const int64_t* in_k, int64_t m, int kk, int64_t nb, float* out_d,
                  int64_t* out_k) {
  __shared__ float sd[kSortSize];
  __shared__ int64_t sk[kSortSize];
  const int qi = blockIdx.y;
  const int64_t b = blockIdx.x;
  const int64_t first = int64_t(b) * kSortSize;
  for (int t = threadIdx.x; t < kSortSize; t += blockDim.x) {
    const int64_t c = first + t;
    sd[t] = c < m ? in_d[int64_t(qi) * m + c] : INFINITY;
    sk[t] = c < m ? in_k[int64_t(qi) * m + c] : kNoKey;
  }
  sort_and_keep(sd, sk, kk, out_d + (int64_t(qi) * nb + b) * kk, out_k + (int64_t(qi) * nb + b) * kk);
}

// Batches (more than fused_max_batch queries): the scores first, then the
// selection. A block of 256 threads scores 64 rows for 8 queries: each
// half-warp takes 4 rows, and lane l of it keeps 4 x 8 accumulators, lane l of
// the fixed order of every (row, query) pair; a loaded row element feeds 8
// FMAs and a query element from shared memory 4, where the fused scan reads
// every row once per query.
constexpr int kTileRows = 4;                                      // rows per half-warp
constexpr int kTileQueries = 8;                                   // queries per block
constexpr int kScoreThreads = 256;                                // 16 half-warps
constexpr int kBlockRows = kScoreThreads / kLanes * kTileRows;    // 64 rows per block

// grid (query groups, row blocks of this launch): scores[qi * lds + r] = 1 -
// dot(q_qi, x_r) for queries [x * 8, +8) of the m in q [m, dp] and rows
// [(b0 + y) * 64, +64); rows past n and queries past m are computed on
// stand-ins and not written. Query groups vary fastest, so the groups of one
// block of rows run side by side and its rows come from memory once, from L2
// for the other groups (with rows fastest, a batch of 256 read the 2 GB
// matrix from memory 32 times: 38 ms on an H200, against torch's 7).
__global__ void __launch_bounds__(kScoreThreads)
    score_kernel(const float* __restrict__ x, int64_t n, int64_t b0, int ld, int dp, const float* __restrict__ q,
                 int m, float* __restrict__ scores, int64_t lds) {
  extern __shared__ float sq[];  // [kTileQueries][dp]
  const int q0 = blockIdx.x * kTileQueries;
  for (int t = threadIdx.x; t < kTileQueries * dp; t += blockDim.x) {
    const int g = t / dp, j = t % dp;
    sq[t] = q0 + g < m ? q[int64_t(q0 + g) * dp + j] : 0.0f;
  }
  __syncthreads();
  const int lane = threadIdx.x % kLanes;
  const int64_t r0 = (b0 + blockIdx.y) * kBlockRows + int64_t(threadIdx.x / kLanes) * kTileRows;
  const float* xr[kTileRows];
#pragma unroll
  for (int r = 0; r < kTileRows; ++r) xr[r] = x + (r0 + r < n ? r0 + r : n - 1) * ld;
  float acc[kTileRows][kTileQueries];
#pragma unroll
  for (int r = 0; r < kTileRows; ++r)
#pragma unroll
    for (int g = 0; g < kTileQueries; ++g) acc[r][g] = 0.0f;
  for (int j = lane; j < dp; j += kLanes) {
    float xv[kTileRows];
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) xv[r] = xr[r][j];
#pragma unroll
    for (int g = 0; g < kTileQueries; ++g) {
      const float qv = sq[g * dp + j];
#pragma unroll
      for (int r = 0; r < kTileRows; ++r) acc[r][g] = __fmaf_rn(qv, xv[r], acc[r][g]);
    }
  }
#pragma unroll
  for (int r = 0; r < kTileRows; ++r)
#pragma unroll
    for (int g = 0; g < kTileQueries; ++g) {  // the lane tree, as in scan_kernel
      float a = acc[r][g];
      a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 8));
      a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 4));
      a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 2));
      a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 1));
      acc[r][g] = a;
    }
  if (lane == 0)
#pragma unroll
    for (int r = 0; r < kTileRows; ++r)
#pragma unroll
      for (int g = 0; g < kTileQueries; ++g)
        if (r0 + r < n && q0 + g < m) scores[int64_t(q0 + g) * lds + r0 + r] = __fsub_rn(1.0f, acc[r][g]);
}

// grid (row blocks, queries): as scan_kernel's selection, from the scores:
// block (b, qi) sorts rows [b * 2048, +2048) of query qi by (distance, key)
// (deleted rows and rows past n last) and writes its best kk to out[(qi * nb + b) * kk].
__global__ void __launch_bounds__(kThreads, 2)
    select_kernel(const float* __restrict__ scores, int64_t lds, const int64_t* __restrict__ keys, int64_t n, int kk,
                  int64_t nb, float* out_d, int64_t* out_k) {
  __shared__ float sd[kSortSize];
  __shared__ int64_t sk[kSortSize];
  const int qi = blockIdx.y;
  const int64_t b = blockIdx.x, first = b * kSortSize;
  for (int t = threadIdx.x; t < kSortSize; t += blockDim.x) {
    const int64_t r = first + t;
    const int64_t key = r < n ? keys[r] : -1;
    sd[t] = key >= 0 ? scores[int64_t(qi) * lds + r] : INFINITY;
    sk[t] = key >= 0 ? key : kNoKey;
  }
  sort_and_keep(sd, sk, kk, out_d + (int64_t(qi) * nb + b) * kk, out_k + (int64_t(qi) * nb + b) * kk);
}

// Makes `device` current for a scope and gives the thread its own back after.
struct DeviceGuard {
  int previous = -1;
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    check(cudaSetDevice(device), "selecting the GPU");
  }
  ~DeviceGuard() {
    if (previous >= 0) cudaSetDevice(previous);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }
  void release() {
    if (p) cudaFree(p);
    p = nullptr;
    n = 0;
  }
  void reserve(size_t count, const char* what) {
    if (count <= n) return;
    release();
    check(cudaMalloc(&p, count * sizeof(T)), what);
    n = count;
  }
};

}  // namespace

bool gpu_search_available(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    if (why) *why = e != cudaSuccess ? std::string("no usable CUDA device: ") + cudaGetErrorString(e)
                                     : std::string("no CUDA device");
    return false;
  }
  return true;
}

struct GpuFlatSearch::Impl {
  int dim = 0, ld = 0, dp = 0;
  int64_t n = 0;
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceBuffer<float> x;
  DeviceBuffer<int64_t> keys;
  int fused_max_batch = kFusedMaxBatch;
  bool scores_fit = false;  // score_kernel's queries fit in shared memory (else every batch runs fused)
  // Per search: the queries, the scores (batches), and two candidate buffers
  // the reduction alternates between.
  mutable std::mutex mu;
  mutable DeviceBuffer<float> q, scores, cd[2];
  mutable DeviceBuffer<int64_t> ck[2];
  ~Impl() {  // the buffers and the stream are this device's: freed with it current, the thread's own restored
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    cudaSetDevice(device);
    x.release();
    keys.release();
    q.release();
    scores.release();
    for (int i = 0; i < 2; ++i) {
      cd[i].release();
      ck[i].release();
    }
    if (stream) cudaStreamDestroy(stream);
    if (previous >= 0) cudaSetDevice(previous);
  }
};

GpuFlatSearch::GpuFlatSearch(const FlatRows& rows, int dim) : impl_(std::make_unique<Impl>()) {
  std::string why;
  if (!gpu_search_available(&why)) throw Error("GPU search: " + why);
  if (dim <= 0) throw Error("GPU search: dimension " + std::to_string(dim) + " is not positive");
  if (rows.n < 0 || (rows.n > 0 && (!rows.x || !rows.keys))) throw Error("GPU search: bad rows (null or negative count)");
  Impl& s = *impl_;
  s.dim = dim;
  s.n = rows.n;
  check(cudaGetDevice(&s.device), "cudaGetDevice");
  // The query lives in shared memory beside the sort's static arrays.
  int smem_max = 0;
  check(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, s.device), "reading the device");
  cudaFuncAttributes scan_attr{};
  check(cudaFuncGetAttributes(&scan_attr, scan_kernel), "reading the scan kernel");
  const int64_t dp = (int64_t(dim) + kLanes - 1) / kLanes * kLanes, smem = dp * int64_t(sizeof(float));
  if (smem + int64_t(scan_attr.sharedSizeBytes) > smem_max)
    throw Error("GPU search: dimension " + std::to_string(dim) + " is too large for this GPU's shared memory (" +
                std::to_string(smem_max / 1024) + " KB a block)");
  s.dp = int(dp);
  s.ld = flat_row_stride(dim);  // dim is small now: no overflow
  // The limit is the function's, not this object's: always the device's
  // maximum, so that no object lowers it under another's launches.
  check(cudaFuncSetAttribute(scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             smem_max - int(scan_attr.sharedSizeBytes)),
        "configuring the scan");
  check(cudaFuncSetAttribute(score_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max),
        "configuring the scores");
  s.scores_fit = kTileQueries * smem <= smem_max;
  check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "creating a stream");
  if (s.n > 0) {
    s.x.reserve(size_t(s.n) * s.ld, "allocating the rows on the GPU");
    s.keys.reserve(size_t(s.n), "allocating the keys on the GPU");
    // On the object's stream (non-blocking: not ordered after the default
    // stream), finished before the constructor returns.
    check(cudaMemcpyAsync(s.x.p, rows.x, size_t(s.n) * s.ld * sizeof(float), cudaMemcpyHostToDevice, s.stream),
          "copying the rows");
    check(cudaMemcpyAsync(s.keys.p, rows.keys, size_t(s.n) * sizeof(int64_t), cudaMemcpyHostToDevice, s.stream),
          "copying the keys");
    check(cudaStreamSynchronize(s.stream), "copying the rows");
  }
}

GpuFlatSearch::~GpuFlatSearch() = default;

void GpuFlatSearch::set_fused_max_batch(int batch) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fused_max_batch = batch;
}
int GpuFlatSearch::dim() const { return impl_->dim; }
int64_t GpuFlatSearch::rows() const { return impl_->n; }

std::string GpuFlatSearch::device() const {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, impl_->device), "cudaGetDeviceProperties");
  return std::string(p.name) + ", " + std::to_string(p.totalGlobalMem >> 30) + " GiB, sm_" +
         std::to_string(p.major) + std::to_string(p.minor);
}

void GpuFlatSearch::search(int64_t nq, const float* q, int k, float* distances, int64_t* out_keys) const {
  const Impl& s = *impl_;
  if (nq < 0) throw Error("search: negative query count " + std::to_string(nq));
  if (k < 0) throw Error("search: negative k " + std::to_string(k));
  if (k > kMaxK) throw Error("GPU search: k = " + std::to_string(k) + " is over " + std::to_string(kMaxK));
  if (nq == 0 || k == 0) return;
  if (!q || !distances || !out_keys) throw Error("search: null queries or outputs");
  for (int64_t i = 0; i < nq; ++i) {
    double norm2 = 0.0;
    for (int j = 0; j < s.dim; ++j) {
      const float v = q[i * s.dim + j];
      if (!std::isfinite(v))
        throw Error("search: query " + std::to_string(i) + " has a non-finite value at column " + std::to_string(j));
      norm2 += static_cast<double>(v) * v;
    }
    if (norm2 > kMaxNorm * kMaxNorm)
      throw Error("search: query " + std::to_string(i) + " has norm " + std::to_string(std::sqrt(norm2)) +
                  " (over 1e15: dot products would overflow)");
  }
  std::lock_guard<std::mutex> lock(s.mu);
  const DeviceGuard on_device(s.device);  // the one the rows are on, whatever this thread had
  cudaGetLastError();  // an error left by the caller's own CUDA work is not this search's
  const int64_t total_blocks = std::max<int64_t>(1, (s.n + kSortSize - 1) / kSortSize);
  std::vector<float> qp;  // queries zero padded to dp columns
  std::vector<float> best_d;
  std::vector<int64_t> best_k;
  const int64_t chunk = std::clamp<int64_t>(
      std::min(kMaxCandidates / (total_blocks * k), kMaxScores / std::max<int64_t>(s.n, 1)), 1, kQueryChunk);
  for (int64_t i0 = 0; i0 < nq; i0 += chunk) {
    const int64_t m = std::min(chunk, nq - i0);
    qp.assign(size_t(m) * s.dp, 0.0f);
    for (int64_t i = 0; i < m; ++i)
      std::copy(q + (i0 + i) * s.dim, q + (i0 + i + 1) * s.dim, qp.begin() + i * s.dp);
    s.q.reserve(qp.size(), "allocating the queries on the GPU");
    check(cudaMemcpyAsync(s.q.p, qp.data(), qp.size() * sizeof(float), cudaMemcpyHostToDevice, s.stream),
          "copying the queries");
    // Scan: every block of rows writes its best k per query, [m][total_blocks][k].
    int64_t cands = total_blocks * k;
    s.cd[0].reserve(size_t(m * cands), "allocating the candidates on the GPU");
    s.ck[0].reserve(size_t(m * cands), "allocating the candidates on the GPU");
    if (m <= s.fused_max_batch || !s.scores_fit) {
      for (int64_t b0 = 0; b0 < total_blocks; b0 += kMaxBlocksY) {
        const int64_t nb = std::min(kMaxBlocksY, total_blocks - b0);
        scan_kernel<<<dim3(unsigned(m), unsigned(nb)), kThreads, size_t(s.dp) * sizeof(float), s.stream>>>(
            s.x.p, s.keys.p, s.n, b0, s.ld, s.dp, s.q.p, k, total_blocks, s.cd[0].p, s.ck[0].p);
      }
      check(cudaGetLastError(), "launching the scan");
    } else {
      if (s.n > 0) {
        s.scores.reserve(size_t(m * s.n), "allocating the scores on the GPU");
        const int64_t row_blocks = (s.n + kBlockRows - 1) / kBlockRows;
        for (int64_t b0 = 0; b0 < row_blocks; b0 += kMaxBlocksY)
          score_kernel<<<dim3(unsigned((m + kTileQueries - 1) / kTileQueries),
                              unsigned(std::min(kMaxBlocksY, row_blocks - b0))),
                         kScoreThreads, size_t(kTileQueries) * s.dp * sizeof(float), s.stream>>>(
              s.x.p, s.n, b0, s.ld, s.dp, s.q.p, int(m), s.scores.p, s.n);
        check(cudaGetLastError(), "launching the scores");
      }
      select_kernel<<<dim3(unsigned(total_blocks), unsigned(m)), kThreads, 0, s.stream>>>(
          s.scores.p, s.n, s.keys.p, s.n, k, total_blocks, s.cd[0].p, s.ck[0].p);
      check(cudaGetLastError(), "launching the selection");
    }
    // Reduce: kSortSize candidates per block to k, until one list per query.
    int cur = 0;
    while (cands > k) {
      const int64_t nb = (cands + kSortSize - 1) / kSortSize;
      s.cd[1 - cur].reserve(size_t(m * nb * k), "allocating the candidates on the GPU");
      s.ck[1 - cur].reserve(size_t(m * nb * k), "allocating the candidates on the GPU");
      reduce_kernel<<<dim3(unsigned(nb), unsigned(m)), kThreads, 0, s.stream>>>(
          s.cd[cur].p, s.ck[cur].p, cands, k, nb, s.cd[1 - cur].p, s.ck[1 - cur].p);
      check(cudaGetLastError(), "launching the reduction");
      cur = 1 - cur;
      cands = nb * k;
    }
    best_d.resize(size_t(m * k));
    best_k.resize(size_t(m * k));
    check(cudaMemcpyAsync(best_d.data(), s.cd[cur].p, best_d.size() * sizeof(float), cudaMemcpyDeviceToHost,
                          s.stream),
          "copying the results");
    check(cudaMemcpyAsync(best_k.data(), s.ck[cur].p, best_k.size() * sizeof(int64_t), cudaMemcpyDeviceToHost,
                          s.stream),
          "copying the results");
    check(cudaStreamSynchronize(s.stream), "searching");
    for (int64_t t = 0; t < m * k; ++t) {
      // Live rows have finite distances (finite rows and queries, norms <= 1e15);
      // the key cannot tell, since kNoKey is also a key FlatIndex accepts.
      const bool live = best_d[size_t(t)] != std::numeric_limits<float>::infinity();
      distances[i0 * k + t] = live ? best_d[size_t(t)] : std::numeric_limits<float>::infinity();
      out_keys[i0 * k + t] = live ? best_k[size_t(t)] : -1;
    }
  }
}

}  // namespace vismem
