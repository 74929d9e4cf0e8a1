// npy.h: NumPy .npy arrays in and out (format version 1.0/2.0/3.0).
//
// Basic usage:
//   vismem::NpyArray a = vismem::read_npy("train.npy");   // any supported dtype
//   std::vector<float> x = a.to_float();                   // float32/float16/uint8 -> float32
//   vismem::write_npy_f32("out.npy", x.data(), {n, d});
//
// Supported dtypes: float32 '<f4', float16 '<f2', uint8 '|u1', float64 '<f8',
// int64 '<i8', int32 '<i4'. Only C order (fortran_order False). Anything else
// (big-endian, Fortran order, object arrays, a truncated file) throws
// vismem::Error naming the file and the problem.
// Thread safety: free functions over values; safe from any thread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vismem {

enum class DType { f32, f16, f64, u8, i32, i64 };

struct NpyArray {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // raw little-endian bytes, C order

  int64_t numel() const;
  size_t itemsize() const;
  // Converts every element to float32 (float16 exactly, float64 rounded).
  std::vector<float> to_float() const;
  std::string shape_str() const;  // "(3, 224, 224)"
};

NpyArray read_npy(const std::string& path);
NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name);

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
void write_npy_u8(const std::string& path, const uint8_t* data, const std::vector<int64_t>& shape);

// IEEE half <-> float, exact for every finite half value.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace vismem
