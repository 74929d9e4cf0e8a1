// flat_index.h: exact (brute-force) top-k search over one contiguous float32 matrix.
//
// Basic usage:
//   vismem::FlatIndex idx(768);                               // or FlatIndex(768, {FlatIndex::Storage::f16})
//   idx.add(n, x, keys);                                      // x: n * 768 row-major; keys: n unique ints >= 0
//   std::vector<float> dist(nq * k); std::vector<int64_t> key(nq * k);
//   idx.search(nq, q, k, dist.data(), key.data());            // q: nq * 768 row-major
//   idx.remove(m, gone);                                      // swap-with-last, nothing reloaded
//
// Contract (index.h): per query, ascending d = 1 - <q, x> in float32; equal
// distances by ascending key; key -1 / distance +inf padding when k > size().
//
// Determinism. Every reported distance is FlatIndex::distance(q, x): one fixed
// summation order (16 FMA lanes over the columns in order, then a pairwise
// lane tree; see flat_index.cpp), so the bits of a (query, item) distance do
// not depend on the item's row, the other items, the batch size, the thread
// count or the scan that found it. BLAS sgemm does not promise that (measured
// with OpenBLAS 0.3.21: ~87% of pairs differ in the last bit between batch 1
// and batch 100, and a few change when the rows shift by one), so:
//   - Scan::kernel: a fixed-order kernel computes the distances themselves,
//     one pass over the matrix per 4096 queries;
//   - Scan::blas: sgemm in blocks only nominates candidates, keeping every row
//     whose sgemm score is within a proven margin of the k-th best (each of
//     sgemm and the fixed order is within gamma_d |q| |x| of the true dot,
//     plus the rounding of 1 - s), and the candidates are rescored with the
//     fixed order.
// Both return identical bits, and removing an item never changes another
// item's distance or rank ("removed == never added"). Scan::automatic: the
// kernel, except for batches >= 64 when BLAS is single-threaded and a one-time
// timing (per row width, per process, ~10 ms) finds sgemm 25% faster, which
// depends on the BLAS build: OpenBLAS 0.3.21 runs SSE3 code on this Xeon
// unless OPENBLAS_CORETYPE=SkylakeX is set. AVX2: the kernel up to 8 queries
// (the float16 copy's range too), sgemm above. Portable kernels (no FMA
// instructions: the fixed order costs a libm call per multiply-add): sgemm
// for every batch, the kernel only when asked for (Scan::kernel).
//
// Kernels per CPU. The kernels are compiled once per vector ISA level
// (portable, AVX2 + FMA + F16C, AVX-512; flat_kernels.inl) and the level is
// chosen at run time by cpu_isa() (src/util/cpu.h; VISMEM_ISA lowers it).
// Every level returns the same bits: the summation order above is the
// contract, and the float16 copy rounds the same way everywhere.
//
// Storage::f16 also keeps a float16 copy of the rows (1.5x memory) that small
// batches (<= 8 queries, memory bound) scan at half the memory traffic; its
// candidates (margin widened by the float16 rounding, 2^-11 |q| |x|) are
// rescored in float32, so results are bit-identical to Storage::f32.
//
// Threads. search() splits the rows over `threads` OpenMP threads (0 =
// default_threads(); fewer for small work); each keeps per-query candidates,
// merged at the end. The kernel scan never touches BLAS. The sgemm scan calls
// matmul() from inside those threads, which is right only when BLAS itself is
// single-threaded (the OpenBLAS pthreads build would otherwise start
// blas_threads() workers per call, T x B threads on the cores). So when
// blas_threads() > 1 the sgemm scan runs one thread of ours and lets BLAS
// parallelize each block; call vismem::set_blas_threads(1) at startup to let
// the index own the cores.
//
// Thread safety: search() is const and may run concurrently with other
// search() calls; add(), remove() and reserve() need exclusive access.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "index.h"

namespace vismem {

class FlatIndex : public Index {
 public:
  enum class Storage { f32, f16 };
  // Which scan scores the rows; all return the same bits, they differ in speed.
  enum class Scan { automatic, kernel, blas };
  struct Options {
    Storage storage = Storage::f32;
    Scan scan = Scan::automatic;
  };

  explicit FlatIndex(int dim);
  FlatIndex(int dim, Options options);

  int dim() const override { return dim_; }
  int64_t size() const override { return static_cast<int64_t>(keys_.size()); }
  const Options& options() const { return options_; }

  // The distance every search reports: 1 - (fixed-order float32 dot of q and x).
  static float distance(const float* q, const float* x, int d);

  // Room for n items in total (avoids regrowing a large matrix while adding).
  void reserve(int64_t n);
  // x: n * dim() row-major, finite, each row's norm <= 1e15 (and values within
  // float16 range for Storage::f16); keys: n, each >= 0 and not in the index.
  // Throws vismem::Error otherwise, and then nothing is added.
  void add(int64_t n, const float* x, const int64_t* keys) override;
  // q: nq * dim() row-major, finite, norms <= 1e15; distances, keys: nq * k
  // row-major. Throws vismem::Error (writing nothing) on a bad query, k < 0 or
  // threads < 0.
  void search(int64_t nq, const float* q, int k, float* distances, int64_t* keys, int threads = 0) const override;
  // Swap-with-last; the vacated row is zeroed, so no copy of a removed vector
  // stays in the index's buffers.
  int64_t remove(int64_t n, const int64_t* keys) override;
  bool reconstruct(int64_t key, float* out) const override;

 private:
  int dim_;
  int ld_;  // row stride: dim_ rounded up to 16 (zero padded) so kernels read whole lane blocks
  Options options_;
  std::vector<float> data_;     // size() * ld_, row-major
  std::vector<uint16_t> half_;  // float16 copy, same layout (Storage::f16 only)
  std::vector<int64_t> keys_;   // key of each row
  std::unordered_map<int64_t, int64_t> row_of_;
  // Largest row norm ever added; never lowered on remove: it only widens the
  // candidate margin, never changes a result.
  double max_norm_ = 0.0;
};

// The same exact search over rows the caller owns (a memory-mapped file, say).
// x: n * flat_row_stride(dim) float32, row-major, each row zero padded past
// dim; half: the float16 copy in the same layout, or null; keys: n, where a
// key < 0 marks a deleted row, which is never returned. max_norm bounds every
// row's L2 norm (it sizes the rescoring margin; 1 + 1e-5 for normalized rows).
// Results, errors and determinism are those of FlatIndex::search.
struct FlatRows {
  const float* x = nullptr;
  const uint16_t* half = nullptr;
  const int64_t* keys = nullptr;
  int64_t n = 0;
  double max_norm = 1.0;
};
int flat_row_stride(int dim);  // dim rounded up to 16 floats (64 bytes)
bool flat_f16_supported();     // this CPU converts float16 in hardware (F16C)
// The float16 copy's rounding (round to nearest even), n values.
void flat_to_half(const float* x, uint16_t* out, int64_t n);
void flat_search(const FlatRows& rows, int dim, const FlatIndex::Options& options, int64_t nq, const float* q, int k,
                 float* distances, int64_t* keys, int threads = 0);

}  // namespace vismem
