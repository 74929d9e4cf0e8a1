// safetensors reader: dtype conversion, sharded checkpoints, and corrupt or
// truncated files (each must throw vismem::Error, never crash).
#include "safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "error.h"
#include "npy.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using vismem::Error;
using vismem::SafeTensors;

namespace {

const std::string kShared = VISMEM_SHARED_DIR;

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("vismem_st_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

struct Tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> bytes_of(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return {b, b + n};
}

// A safetensors file as the Python writer lays it out: u64 header length,
// JSON header padded with spaces, tensors back to back.
std::string encode(const std::vector<Tensor>& ts, json extra = json::object()) {
  json h = extra;
  h["__metadata__"] = {{"format", "pt"}};
  size_t off = 0;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  std::string out(8, '\0');
  uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += hs;
  for (const auto& t : ts) out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return out;
}

std::string raw_file(const std::string& header_json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + data;
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Values exactly representable in F16 and BF16 (including negatives, zero,
// a subnormal half and large magnitudes).
const std::vector<float> kValues = {0.0f, 1.0f, -2.5f, 0.15625f, 1024.0f, -0.0009765625f, 61440.0f, 3.0517578125e-05f};

}  // namespace

TEST(SafeTensors, F32F16BF16ConvertExactly) {
  TempDir dir;
  std::vector<uint16_t> h16, b16;
  for (float v : kValues) {
    h16.push_back(vismem::float_to_half(v));
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    ASSERT_EQ(bits & 0xffffu, 0u) << v;  // exact in bfloat16
    b16.push_back(static_cast<uint16_t>(bits >> 16));
  }
  const int64_t n = static_cast<int64_t>(kValues.size());
  std::vector<double> f64(kValues.begin(), kValues.end());
  std::vector<int64_t> i64 = {1, 2, 3};
  write(dir / "m.safetensors",
        encode({{"a.f32", "F32", {2, n / 2}, bytes_of(kValues.data(), kValues.size() * 4)},
                {"a.f16", "F16", {n}, bytes_of(h16.data(), h16.size() * 2)},
                {"a.bf16", "BF16", {n, 1}, bytes_of(b16.data(), b16.size() * 2)},
                {"a.f64", "F64", {n}, bytes_of(f64.data(), f64.size() * 8)},
                {"ids", "I64", {1, 3}, bytes_of(i64.data(), 24)},
                {"scalar", "F32", {}, bytes_of(kValues.data() + 2, 4)}}));
  SafeTensors st = SafeTensors::open(dir / "m.safetensors");
  EXPECT_EQ(st.names().size(), 6u);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.info("a.f32").shape, (std::vector<int64_t>{2, n / 2}));
  EXPECT_EQ(st.to_float("a.f32"), kValues);
  EXPECT_EQ(st.to_float("a.f16", {n}), kValues);
  EXPECT_EQ(st.to_float("a.bf16", {n, 1}), kValues);
  EXPECT_EQ(st.to_float("a.f64"), kValues);
  EXPECT_EQ(st.to_float("scalar", {}), std::vector<float>{-2.5f});
  EXPECT_EQ(st.info("ids").dtype, vismem::StDType::i64);
  EXPECT_THROW(st.to_float("ids"), Error);                 // ints are not converted
  EXPECT_THROW(st.to_float("a.f16", {n, 1}), Error);       // shape differs from what the caller implies
  EXPECT_THROW(st.info("missing"), Error);
  EXPECT_FALSE(st.has("missing"));
}

TEST(SafeTensors, ShardedIndex) {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6}, c = {7};
  write(dir / "model-00001-of-00002.safetensors",
        encode({{"x.a", "F32", {2, 2}, bytes_of(a.data(), 16)}, {"x.b", "F32", {2}, bytes_of(b.data(), 8)}}));
  write(dir / "model-00002-of-00002.safetensors", encode({{"y.c", "F32", {1}, bytes_of(c.data(), 4)}}));
  json idx = {{"metadata", {{"total_size", 28}}},
              {"weight_map",
               {{"x.a", "model-00001-of-00002.safetensors"},
                {"x.b", "model-00001-of-00002.safetensors"},
                {"y.c", "model-00002-of-00002.safetensors"}}}};
  write(dir / "model.safetensors.index.json", idx.dump());
  // The folder resolves to the index when there is no single model.safetensors.
  SafeTensors st = SafeTensors::open(dir.path.string());
  EXPECT_EQ(st.files().size(), 2u);
  EXPECT_EQ(st.names(), (std::vector<std::string>{"x.a", "x.b", "y.c"}));
  EXPECT_EQ(st.to_float("x.a", {2, 2}), a);
  EXPECT_EQ(st.to_float("x.b"), b);
  EXPECT_EQ(st.to_float("y.c"), c);
  EXPECT_EQ(st.info("y.c").file, 1u);

  // An index naming a tensor its shard lacks, a missing shard, a path outside the folder.
  json bad = idx;
  bad["weight_map"]["z"] = "model-00002-of-00002.safetensors";
  write(dir / "bad1.index.json", bad.dump());
  EXPECT_THROW(SafeTensors::open(dir / "bad1.index.json"), Error);
  bad = idx;
  bad["weight_map"]["y.c"] = "model-00003-of-00002.safetensors";
  write(dir / "bad2.index.json", bad.dump());
  EXPECT_THROW(SafeTensors::open(dir / "bad2.index.json"), Error);
  bad = idx;
  bad["weight_map"]["y.c"] = "../model-00002-of-00002.safetensors";
  write(dir / "bad3.index.json", bad.dump());
  EXPECT_THROW(SafeTensors::open(dir / "bad3.index.json"), Error);
  write(dir / "bad4.index.json", "{\"weight_map\": [1, 2]");
  EXPECT_THROW(SafeTensors::open(dir / "bad4.index.json"), Error);
}

TEST(SafeTensors, TruncatedFixtureCopiesThrow) {
  // Every prefix length class of a real checkpoint: empty, inside the length
  // field, inside the header, inside the data, one byte short.
  TempDir dir;
  const std::string full = read(kShared + "/fixtures/dinov2_tiny/model.safetensors");
  ASSERT_GT(full.size(), 1000u);
  {
    write(dir / "ok.safetensors", full);
    SafeTensors st = SafeTensors::open(dir / "ok.safetensors");
    EXPECT_EQ(st.info("layernorm.weight").shape, std::vector<int64_t>{64});
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(full[i]);
  for (size_t len : {size_t(0), size_t(4), size_t(8), size_t(9), size_t(8 + hlen / 2), size_t(8 + hlen),
                     size_t(8 + hlen + 100), full.size() / 2, full.size() - 1}) {
    write(dir / "t.safetensors", full.substr(0, len));
    EXPECT_THROW(SafeTensors::open(dir / "t.safetensors"), Error) << "truncated to " << len << " bytes";
  }
}

TEST(SafeTensors, CorruptHeadersThrow) {
  TempDir dir;
  const std::string data(64, '\0');
  auto hdr = [](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return "{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offs + "}}";
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", raw_file("{\"t\": {\"dtype\": ", data)},
      {"not an object", raw_file("[1, 2, 3]", data)},
      {"unknown dtype", raw_file(hdr("F8_E9", "[4]", "[0, 4]"), data)},
      {"dtype not a string", raw_file("{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", data)},
      {"negative dim", raw_file(hdr("F32", "[-1]", "[0, 4]"), data)},
      {"fractional dim", raw_file(hdr("F32", "[1.5]", "[0, 4]"), data)},
      {"size mismatch", raw_file(hdr("F32", "[4]", "[0, 12]"), data)},
      {"end past data", raw_file(hdr("F32", "[32]", "[0, 128]"), data)},
      {"begin > end", raw_file(hdr("F32", "[0]", "[8, 4]"), data)},
      {"offsets not a pair", raw_file(hdr("F32", "[1]", "[0]"), data)},
      {"huge shape overflows", raw_file(hdr("F32", "[4294967296, 4294967296, 4294967296]", "[0, 16]"), data)},
      {"missing keys", raw_file("{\"t\":{\"dtype\":\"F32\"}}", data)},
      {"metadata not strings", raw_file("{\"__metadata__\":{\"a\":1}}", data)},
      {"overlap",
       raw_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                data)},
  };
  for (const auto& [what, bytes] : cases) {
    write(dir / "c.safetensors", bytes);
    EXPECT_THROW(SafeTensors::open(dir / "c.safetensors"), Error) << what;
  }
  // A header length field far beyond the file.
  std::string big = raw_file("{}", data);
  big[6] = 0x7f;
  write(dir / "c.safetensors", big);
  EXPECT_THROW(SafeTensors::open(dir / "c.safetensors"), Error);
  // Flipping bytes anywhere in a real header: an error or a valid file, never a crash.
  const std::string full = read(kShared + "/fixtures/clip_tiny_f16/model.safetensors");
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 200; ++i) {
    std::string mutated = full;
    const size_t at = 8 + rng() % 2000;
    mutated[at] = static_cast<char>(rng() & 0xff);
    write(dir / "m.safetensors", mutated);
    try {
      SafeTensors st = SafeTensors::open(dir / "m.safetensors");
      for (const auto& name : st.names())
        if (st.info(name).dtype == vismem::StDType::f16) st.to_float(name);
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  // Folders without a checkpoint and missing files.
  EXPECT_THROW(SafeTensors::open(dir.path.string() + "/nope.safetensors"), Error);
  fs::create_directories(dir.path / "empty");
  EXPECT_THROW(SafeTensors::open(dir / "empty"), Error);
}
