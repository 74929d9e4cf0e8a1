// TFLite flatbuffers on arbitrary bytes: parse, then read every constant tensor.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz.h"
#include "tflite.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vismem::fuzz::fuzz_guard([&] {
    auto m = vismem::tflite::parse_model(std::vector<uint8_t>(data, data + size), "fuzz.tflite");
    for (size_t i = 0; i < m.tensors.size(); ++i)
      if (m.tensors[i].is_constant()) vismem::fuzz::fuzz_guard([&] { (void)vismem::tflite::dequantize(m, int(i)); });
  });
  return 0;
}
