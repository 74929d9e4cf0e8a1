// Neighbor files (SPEC section 7, JSON) on arbitrary bytes, then voted on:
// what `vismem eval --neighbors FILE` does with them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "aggregate.h"
#include "fuzz.h"
#include "neighbors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vismem::fuzz::fuzz_guard([&] {
    auto qs = vismem::parse_neighbor_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    // Written back out, it must read the same.
    auto again = vismem::parse_neighbor_json(vismem::neighbor_json(qs), "again.json");
    if (again.size() != qs.size()) std::abort();
  });
  return 0;
}
