// .npy parsing and conversion to float32 on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "fuzz.h"
#include "npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vismem::fuzz::fuzz_guard([&] {
    vismem::NpyArray a = vismem::parse_npy(data, size, "fuzz.npy");
    if (a.data.size() != size_t(a.numel()) * a.itemsize()) std::abort();
    std::vector<float> x = a.to_float();
    if (x.size() != size_t(a.numel())) std::abort();
  });
  return 0;
}
