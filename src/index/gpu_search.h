// gpu_search.h: exact top-k search on a CUDA GPU, bit-identical to flat_search.
//
// Basic usage:
//   if (vismem::gpu_search_available()) {
//     vismem::GpuFlatSearch gpu(rows, dim);          // copies the rows and keys to the GPU once
//     gpu.search(nq, q, k, distances.data(), keys.data());  // as flat_search, same bits
//   }
//
// What it computes. The contract of FlatIndex::search (flat_index.h): per
// query, ascending d = 1 - <q, x> in float32, equal distances by ascending
// key, deleted rows (key < 0) never returned, key -1 / distance +inf padding
// when fewer than k rows are live. Every distance is the fixed-order dot of
// flat_index.h: lane l of 16 sums q[j] x[j] for j = l, l + 16, ... over the
// row stride (zero padded) with fused multiply-adds in that order, then the
// pairwise tree (l, l + 8), (l, l + 4), (l, l + 2), (0, 1). On the GPU a
// half-warp is the 16 lanes and the tree is three shuffles: IEEE fmaf and
// additions round the same as the CPU's, so the distances, the order and the
// keys are the CPU's to the bit (tests/test_gpu_search.cpp checks it against
// flat_search wherever a GPU is present).
//
// How. Up to 2 queries (set_fused_max_batch), fused: a block of 1024 threads
// takes 2048 rows and one query, computes their distances into shared memory
// (the scores never leave the chip), sorts them (bitonic, by distance then
// key) and writes its best k; the blocks of all queries for the same rows
// run side by side, so the rows come from memory once and from L2 for the
// other queries. Larger batches: the scores first, [batch, N] in GPU memory,
// a block scoring 64 rows x 8 queries (each row element loaded once for the 8,
// every (row, query) pair still its own 16 lanes in the fixed order), then
// the same per-2048-rows sort selects from them. Either way the candidates
// are then reduced 2048 at a time by the same sort until one list of k is
// left per query.
//
// Limits: k <= kMaxK (1024); queries finite with norm <= 1e15 (the CPU
// path's rule); rows as FlatRows documents them (finite, zero padded past
// dim). The float16 copy is not used: the GPU reads float32 rows.
//
// Builds: the CUDA path is compiled with cmake -DVISMEM_CUDA=ON (nvcc and
// the CUDA runtime); without it gpu_search_available() is false, says why,
// and GpuFlatSearch throws. Errors (no device, out of device memory, a CUDA
// error) are vismem::Error with CUDA's message.
// Thread safety: search() is const but serializes on the object's stream and
// buffers (a mutex); use one object per thread for concurrency.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "flat_index.h"

namespace vismem {

// True where this build has the CUDA path and a device answers; otherwise
// false, with the reason in *why (if non-null).
bool gpu_search_available(std::string* why = nullptr);

class GpuFlatSearch {
 public:
  static constexpr int kMaxK = 1024;

  // Copies rows.x (n * flat_row_stride(dim) floats) and rows.keys (n) to the
  // GPU; rows.half is ignored. Throws vismem::Error where no GPU is usable or
  // its memory is short.
  GpuFlatSearch(const FlatRows& rows, int dim);
  ~GpuFlatSearch();
  GpuFlatSearch(const GpuFlatSearch&) = delete;
  GpuFlatSearch& operator=(const GpuFlatSearch&) = delete;

  // Batches of up to `batch` queries run the fused scan, larger ones scores
  // then selection (default 2). Both return the same bits; for tests and benchmarks.
  void set_fused_max_batch(int batch);
  int dim() const;
  int64_t rows() const;
  // q: nq * dim() row-major; distances, keys: nq * k row-major. Throws
  // vismem::Error (writing nothing) on a non-finite query, a norm above
  // 1e15, k < 0 or k > kMaxK.
  void search(int64_t nq, const float* q, int k, float* distances, int64_t* keys) const;
  // The name of the device, its memory and compute capability ("NVIDIA H200, 139 GiB, sm_90").
  std::string device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vismem
