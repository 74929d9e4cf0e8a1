// faiss_index.h: approximate nearest-neighbor search through FAISS (IVF, PQ,
// scalar quantizers, HNSW), behind the same narrow interface as FlatIndex.
//
// Basic usage:
//   vismem::FaissIndex idx(768, "IVF1024,PQ64");       // a FAISS index-factory string
//   if (idx.train_min() <= n) idx.train(n, x);          // x: n * 768 row-major (a sample)
//   idx.add(n, x, keys);                                // keys: n unique ints >= 0
//   std::vector<float> dist(nq * k); std::vector<int64_t> key(nq * k);
//   idx.search(nq, q, k, dist.data(), key.data(), {.nprobe = 32});
//   idx.remove(m, gone);                                // physically out of the lists / graph
//   idx.write("mem.db.i1.faiss"); auto back = vismem::FaissIndex::read("mem.db.i1.faiss");
//
// The index only nominates candidates: its distances are FAISS's (squared L2
// between the stored codes and the query; for unit vectors that ranks as
// 1 - <q, x> does), and callers that report distances (the memory) re-score
// the candidates with the exact vectors. Keys are the caller's (the memory
// uses row numbers); search pads with key -1 / distance +inf.
//
// Kinds (kind()): ivf (IndexIVF and subclasses: "IVFn,Flat", "IVFn,PQm",
// "IVFn,SQ8", "IVFn_HNSWm,PQm", ...; trained; nprobe), hnsw ("HNSWm",
// "HNSWm,Flat", "HNSWm,PQm", "HNSWm,SQ8"; efSearch) and codes (any other
// factory string FAISS builds, e.g. "PQ64", "SQ8", "LSH": a flat scan of
// compressed codes). Non-IVF kinds are wrapped in an IndexIDMap so that keys
// are kept.
//
// Removal is physical for every kind. IVF: the entries leave their inverted
// lists (FAISS remove_ids). Codes: the rows leave the code array. HNSW, which
// FAISS cannot remove from: the node is cut out of the graph (its links and
// every link to it are dropped, the entry point moves), its stored code is
// overwritten with zeros and its key becomes -1; the node's slot stays as an
// unreachable hole until rebuild (holes() counts them).
// Thread safety: search() is const and may run concurrently with other
// search() calls; add(), remove(), train(), remap_keys() need exclusive access.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "index.h"

namespace faiss {
struct Index;
}

namespace vismem {

class FaissIndex : public Index {
 public:
  enum class Kind { ivf, hnsw, codes };
  struct Params {
    int nprobe = 0;  // IVF lists visited per query (0: default_nprobe())
    int ef = 0;      // HNSW efSearch (0: default_ef())
  };

  // Throws vismem::Error naming the string when FAISS cannot build it, when
  // it is "Flat" (exact search needs no index) or when it changes the
  // dimension (a pre-transform like "PCA64,..." is refused: the memory re-scores
  // with its own vectors, so the index must see the same ones).
  FaissIndex(int dim, const std::string& factory);
  ~FaissIndex() override;
  FaissIndex(FaissIndex&&) noexcept;
  FaissIndex& operator=(FaissIndex&&) noexcept;

  // Files: an 64-byte header (magic, dim, user tag) then FAISS's own
  // write_index bytes. write() syncs the file before returning. read() throws
  // vismem::Error on a file that is not one, is truncated, or is for another dim.
  void write(const std::string& path, const std::string& tag = "") const;
  // map: IVF inverted lists are memory-mapped read-only instead of read (an
  // instant load whatever the size; add/remove/remap_keys then throw).
  static std::unique_ptr<FaissIndex> read(const std::string& path, std::string* tag = nullptr, bool map = false);

  int dim() const override { return dim_; }
  int64_t size() const override;  // live entries (HNSW holes not counted)
  const std::string& factory() const { return factory_; }
  Kind kind() const { return kind_; }
  const char* kind_name() const;
  int64_t nlist() const;          // IVF lists (0 for other kinds)
  bool lossy() const;             // codes are not the float32 vectors (PQ, SQ, LSH)
  int64_t holes() const;          // HNSW nodes cut out by remove()
  int64_t code_bytes() const;     // bytes per stored entry, as FAISS reports its code size (+ 8 for the key)

  bool is_trained() const;
  // Items needed before train() (FAISS's k-means wants 39 points per centroid:
  // 39 * nlist for IVF, 39 * 256 for 8-bit PQ / additive codebooks), and how
  // many of them train() uses (at most 64 per centroid: more costs time, not recall).
  int64_t train_min() const;
  int64_t train_sample() const;
  // x: n * dim() row-major; n >= train_min(). Throws otherwise.
  void train(int64_t n, const float* x);

  int default_nprobe() const;  // max(1, nlist / 32), at most nlist
  int default_ef() const;      // 64

  void add(int64_t n, const float* x, const int64_t* keys) override;
  void search(int64_t nq, const float* q, int k, float* distances, int64_t* keys, int threads = 0) const override;
  void search(int64_t nq, const float* q, int k, float* distances, int64_t* keys, const Params& p,
              int threads = 0) const;
  int64_t remove(int64_t n, const int64_t* keys) override;
  // Approximate codes are not the vectors: reconstruct() returns false for
  // lossy kinds and for keys not present.
  bool reconstruct(int64_t key, float* out) const override;

  // Renames keys (the memory's compaction renumbers rows): new_key(old) >= 0.
  void remap_keys(const std::function<int64_t(int64_t)>& new_key);
  // Every live key, in no particular order (the unlearning receipt checks them).
  std::vector<int64_t> keys() const;

 private:
  int dim_ = 0;
  std::string factory_;
  Kind kind_ = Kind::codes;
  std::unique_ptr<faiss::Index> index_;
  int64_t holes_ = 0;
  bool read_only_ = false;
  void check_writable(const char* what) const;
  void validate(const std::string& path) const;
  std::unique_ptr<std::shared_mutex> ef_mu_;  // guards the HNSW efSearch field (see search())
  FaissIndex();
  void classify_kind();
};

// The factory string a user wrote, checked: empty and "Flat" mean "no index";
// anything else must build (throws vismem::Error with FAISS's reason otherwise).
bool wants_faiss_index(const std::string& factory, int dim);

}  // namespace vismem
