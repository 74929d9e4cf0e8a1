// Image decoders (JPEG, PNG, WebP, BMP) on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "fuzz.h"
#include "image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vismem::fuzz::fuzz_guard([&] {
    vismem::Image img = vismem::decode_image(data, size, "fuzz");
    if (img.rgb.size() != size_t(img.width) * size_t(img.height) * 3) std::abort();
  });
  return 0;
}
