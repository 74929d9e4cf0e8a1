// unlearn.h: removal with a receipt: proof that removed items are gone (SPEC section 5).
//
// Basic usage:
//   vismem::Memory mem = vismem::Memory::open("mem.db");
//   vismem::UnlearnReceipt r = vismem::remove_verified(mem, {"cls/img1.jpg"});
//   std::cout << r.summary();          // r.ok() is true when every check passed
//
// Checks, after the removal: the ids are in neither the store nor the index;
// no 64-byte piece (16 floats, at least 4 nonzero) of any removed embedding remains in the database files
// (WAL included); and sample queries (the removed items' own embeddings plus
// random remaining items) get the same neighbors, distances (bit for bit) and
// predictions (four rules, every k) as a memory rebuilt from scratch without
// them. Reports the removal time against the rebuild time.
// Thread safety: writes the memory; needs exclusive access.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "memory.h"

namespace vismem {

struct UnlearnReceipt {
  int64_t removed = 0;
  bool gone_from_store = false;
  bool gone_from_index = false;
  bool no_bytes_left = false;
  int64_t bytes_scanned = 0;
  int64_t sample_queries = 0;
  int k = 0;
  bool same_as_rebuild = false;
  double remove_seconds = 0;
  double rebuild_seconds = 0;
  bool ok() const { return gone_from_store && gone_from_index && no_bytes_left && same_as_rebuild; }
  std::string summary() const;
};

// True if any 16-float window (64 bytes, at least 4 nonzero values, two of
// them adjacent) of any of the d-float vectors occurs in bytes at any byte
// offset. One pass over bytes, whatever the number of vectors.
bool contains_embedding_bytes(const std::string& bytes, const std::vector<std::vector<float>>& vecs, int d);

UnlearnReceipt remove_verified(Memory& mem, const std::vector<std::string>& ids, int sample = 32, int k = 50);

}  // namespace vismem
