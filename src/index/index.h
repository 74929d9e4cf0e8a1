// index.h: the narrow, batched vector index interface (add / search / remove).
//
// Basic usage:
//   std::unique_ptr<vismem::Index> idx = std::make_unique<vismem::FlatIndex>(d);   // flat_index.h
//   idx->add(n, x, keys);                       // x: n * d, row-major, L2-normalized; keys: n
//   std::vector<float> dist(nq * k); std::vector<int64_t> key(nq * k);
//   idx->search(nq, q, k, dist.data(), key.data());   // q: nq * d row-major
//   idx->remove(m, keys_to_remove);
//
// Keys are the memory's insertion sequence numbers: unique, and a larger key
// means added later. Results per query are in ascending distance d = 1 - <q, x>
// (float32); equal distances are ordered by ascending key (earlier added first,
// SPEC section 2). When k exceeds size(), the tail of each row holds key -1 and
// distance +inf. The distance of a (query, item) pair does not depend on which
// other items are in the index, nor on the batch the query came in: removing an
// item never changes another item's distance, bit for bit.
// Thread safety: search() is const and may run concurrently with other search()
// calls; add() and remove() need exclusive access.
#pragma once
#include <cstdint>
#include <vector>

namespace vismem {

class Index {
 public:
  virtual ~Index() = default;
  virtual int dim() const = 0;
  virtual int64_t size() const = 0;
  // x: n * dim() row-major; keys: n, each unused so far.
  virtual void add(int64_t n, const float* x, const int64_t* keys) = 0;
  // q: nq * dim() row-major; distances and keys: nq * k row-major.
  // threads: 0 = default_threads().
  virtual void search(int64_t nq, const float* q, int k, float* distances, int64_t* keys,
                      int threads = 0) const = 0;
  // Removes the items with these keys; unknown keys are ignored. Returns how many were removed.
  virtual int64_t remove(int64_t n, const int64_t* keys) = 0;
  // Copies the stored vector of key into out (dim() floats). False if absent.
  virtual bool reconstruct(int64_t key, float* out) const = 0;
};

}  // namespace vismem
