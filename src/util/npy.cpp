#include "npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "error.h"
#include "textio.h"

namespace vismem {

namespace {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::f64: return 8;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

// Finds the value text after 'key': in the header dict.
std::string dict_value(const std::string& header, const std::string& key, const std::string& name) {
  auto pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw Error(name + ": .npy header has no '" + key + "'");
  pos = header.find(':', pos);
  if (pos == std::string::npos) throw Error(name + ": malformed .npy header");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  size_t end = pos;
  if (header[pos] == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) throw Error(name + ": malformed shape in .npy header");
    return header.substr(pos, end - pos + 1);
  }
  if (header[pos] == '\'') {
    end = header.find('\'', pos + 1);
    if (end == std::string::npos) throw Error(name + ": malformed .npy header");
    return header.substr(pos + 1, end - pos - 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return header.substr(pos, end - pos);
}

void write_npy(const std::string& path, const char* descr, const void* data, size_t itemsize,
               const std::vector<int64_t>& shape) {
  std::string shape_s = "(";
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    shape_s += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) shape_s += ",";
    if (i + 1 < shape.size()) shape_s += " ";
    n *= shape[i];
  }
  shape_s += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_s + ", }";
  size_t total = 10 + header.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  header += std::string(pad, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot write " + path);
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  uint16_t hl = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(header.data(), header.size());
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n * itemsize));
  if (!f) throw Error("write failed: " + path);
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

size_t NpyArray::itemsize() const { return dtype_size(dtype); }

std::string NpyArray::shape_str() const {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into exponent: correct
  return static_cast<uint16_t>(half);
}

std::vector<float> NpyArray::to_float() const {
  int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = data.data();
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::f32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::f16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = half_to_float(h); break; }
      case DType::f64: { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); break; }
      case DType::u8: out[i] = p[i]; break;
      case DType::i32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = static_cast<float>(v); break; }
      case DType::i64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
    }
  }
  return out;
}

NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name) {
  if (size < 10 || std::memcmp(bytes, "\x93NUMPY", 6) != 0) throw Error(name + ": not a .npy file (bad magic)");
  int major = bytes[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = bytes[8] | (bytes[9] << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw Error(name + ": truncated .npy header");
    header_len = bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (static_cast<size_t>(bytes[11]) << 24);
    header_start = 12;
  } else {
    throw Error(name + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_start + header_len > size) throw Error(name + ": truncated .npy header");
  std::string header(reinterpret_cast<const char*>(bytes + header_start), header_len);
  std::string descr = dict_value(header, "descr", name);
  std::string fortran = dict_value(header, "fortran_order", name);
  std::string shape_s = dict_value(header, "shape", name);
  if (fortran.find("True") != std::string::npos)
    throw Error(name + ": array is in Fortran order; save it in C order (np.ascontiguousarray)");
  NpyArray a;
  if (descr == "<f4" || descr == "=f4") a.dtype = DType::f32;
  else if (descr == "<f2" || descr == "=f2") a.dtype = DType::f16;
  else if (descr == "<f8" || descr == "=f8") a.dtype = DType::f64;
  else if (descr == "|u1" || descr == "<u1" || descr == "=u1") a.dtype = DType::u8;
  else if (descr == "<i4" || descr == "=i4") a.dtype = DType::i32;
  else if (descr == "<i8" || descr == "=i8") a.dtype = DType::i64;
  else throw Error(name + ": unsupported dtype '" + descr + "' (float32, float16, float64, uint8, int32, int64 little-endian)");
  if (shape_s.size() < 2 || shape_s.front() != '(' || shape_s.back() != ')')
    throw Error(name + ": malformed shape '" + printable(shape_s) + "' in .npy header (expected a tuple)");
  std::string inner = shape_s.substr(1, shape_s.size() - 2);
  std::stringstream ss(inner);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.find_first_not_of(" \t") == std::string::npos) continue;
    a.shape.push_back(parse_int(tok, 0, INT64_MAX, name + ": shape " + shape_s));
  }
  // The byte count is computed with overflow checks: a shape whose product
  // wraps past 2^64 would otherwise pass the size check with a tiny file.
  const size_t data_start = header_start + header_len;
  const uint64_t have = size - data_start;
  uint64_t need = a.itemsize();
  for (int64_t dim : a.shape)
    if (__builtin_mul_overflow(need, static_cast<uint64_t>(dim), &need) || need > uint64_t(INT64_MAX))
      throw Error(name + ": shape " + a.shape_str() + " is too large (more than 2^63 bytes; the file has " +
                  std::to_string(have) + ")");
  if (have < need)
    throw Error(name + ": truncated .npy data: shape " + a.shape_str() + " needs " + std::to_string(need) +
                " bytes, file has " + std::to_string(have));
  a.data.assign(bytes + data_start, bytes + data_start + need);
  return a;
}

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_npy(buf.data(), buf.size(), path);
}

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_npy(path, "<f4", data, 4, shape);
}

void write_npy_u8(const std::string& path, const uint8_t* data, const std::vector<int64_t>& shape) {
  write_npy(path, "|u1", data, 1, shape);
}

}  // namespace vismem
