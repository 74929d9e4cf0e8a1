// .safetensors files on arbitrary bytes: open (header validation), then
// convert every float tensor. The reader maps a file, so the bytes go to one.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz.h"
#include "safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/vismem_fuzz_" + std::to_string(getpid()) + ".safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  vismem::fuzz::fuzz_guard([&] {
    auto st = vismem::SafeTensors::open(path);
    for (const auto& name : st.names()) vismem::fuzz::fuzz_guard([&] { (void)st.to_float(name); });
  });
  std::remove(path.c_str());
  return 0;
}
