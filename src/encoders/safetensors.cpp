#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "error.h"
#include "textio.h"
#include "npy.h"

namespace vismem {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The safetensors format caps the header at 100 MB; anything larger is corrupt.
constexpr uint64_t kMaxHeader = 100ull << 20;

struct DTypeRow {
  StDType t;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {StDType::f64, "F64", 8},  {StDType::f32, "F32", 4},  {StDType::f16, "F16", 2},  {StDType::bf16, "BF16", 2},
    {StDType::i64, "I64", 8},  {StDType::i32, "I32", 4},  {StDType::i16, "I16", 2},  {StDType::i8, "I8", 1},
    {StDType::u64, "U64", 8},  {StDType::u32, "U32", 4},  {StDType::u16, "U16", 2},  {StDType::u8, "U8", 1},
    {StDType::boolean, "BOOL", 1},
};

}  // namespace

StDType parse_st_dtype(const std::string& name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.t;
  throw Error("unknown safetensors dtype '" + name + "'");
}

const char* st_dtype_name(StDType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.name;
  return "?";
}

size_t st_dtype_size(StDType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.size;
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A read-only private mapping of one whole file.
struct SafeTensors::Mapping {
  const uint8_t* data = nullptr;
  size_t size = 0;

  explicit Mapping(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(path + " is not a regular file");
    }
    size = static_cast<size_t>(st.st_size);
    if (size > 0) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        throw Error("cannot map " + path + ": " + std::strerror(errno));
      }
      data = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
  }
  ~Mapping() {
    if (data) ::munmap(const_cast<uint8_t*>(data), size);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

SafeTensors::SafeTensors() = default;
SafeTensors::SafeTensors(SafeTensors&&) noexcept = default;
SafeTensors& SafeTensors::operator=(SafeTensors&&) noexcept = default;
SafeTensors::~SafeTensors() = default;

namespace {

// Parses and validates one mapped file's header; returns its tensors.
std::vector<TensorInfo> parse_header(const uint8_t* data, size_t size, const std::string& path, size_t file_index,
                                     std::map<std::string, std::string>* metadata) {
  if (size < 8) throw Error(path + ": not a safetensors file (" + std::to_string(size) + " bytes)");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | data[i];  // little-endian on any host
  if (hlen > kMaxHeader || hlen > size - 8)
    throw Error(path + ": header length " + std::to_string(hlen) + " exceeds the file (" + std::to_string(size) +
                " bytes); truncated or not a safetensors file");
  const char* hbeg = reinterpret_cast<const char*>(data + 8);
  json h;
  try {
    h = json::parse(hbeg, hbeg + hlen);
  } catch (const json::exception& e) {
    throw Error(path + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!h.is_object()) throw Error(path + ": header is not a JSON object");

  const uint8_t* buf = data + 8 + hlen;
  const uint64_t buf_size = size - 8 - hlen;
  std::vector<TensorInfo> out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(path + ": __metadata__ is not an object");
      if (metadata)
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) throw Error(path + ": __metadata__ value '" + m.key() + "' is not a string");
          (*metadata)[m.key()] = m.value().get<std::string>();
        }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw Error(where + " needs dtype, shape and data_offsets");
    const json& jd = v["dtype"];
    const json& js = v["shape"];
    const json& jo = v["data_offsets"];
    if (!jd.is_string()) throw Error(where + ": dtype is not a string");
    TensorInfo t;
    t.name = name;
    t.file = file_index;
    try {
      t.dtype = parse_st_dtype(jd.get<std::string>());
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
    if (!js.is_array()) throw Error(where + ": shape is not an array");
    // numel with an overflow guard: a corrupt shape must not wrap to a small size.
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) throw Error(where + ": shape has a non-integer or negative dimension");
      uint64_t dv = d.get<uint64_t>();
      if (dv > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      if (dv != 0 && numel > std::numeric_limits<uint64_t>::max() / dv) overflow = true;
      numel *= dv;
      t.shape.push_back(static_cast<int64_t>(dv));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      throw Error(where + ": data_offsets must be [begin, end]");
    const uint64_t b = jo[0].get<uint64_t>(), e = jo[1].get<uint64_t>();
    if (b > e) throw Error(where + ": data_offsets begin > end");
    if (e > buf_size)
      throw Error(where + ": data ends at byte " + std::to_string(e) + " of a " + std::to_string(buf_size) +
                  "-byte data section; truncated file");
    const uint64_t esize = st_dtype_size(t.dtype);
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / esize || e - b != numel * esize)
      throw Error(where + ": " + std::to_string(e - b) + " bytes do not hold shape " + t.shape_str() + " of " +
                  st_dtype_name(t.dtype));
    t.data = buf + b;
    t.nbytes = static_cast<size_t>(e - b);
    out.push_back(std::move(t));
  }
  // Non-overlapping: sorted by begin, each must start at or after the previous end.
  std::vector<const TensorInfo*> order;
  for (const auto& t : out) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data != b->data ? a->data < b->data : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->data < order[i - 1]->data + order[i - 1]->nbytes)
      throw Error(path + ": tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
  return out;
}

}  // namespace

SafeTensors SafeTensors::open(const std::string& path_in) {
  fs::path path(path_in);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors", ec))
      path /= "model.safetensors";
    else if (fs::exists(path / "model.safetensors.index.json", ec))
      path /= "model.safetensors.index.json";
    else
      throw Error(path_in + ": no model.safetensors or model.safetensors.index.json in this folder");
  }
  SafeTensors st;
  const std::string p = path.string();
  const bool is_index = p.size() >= 5 && p.compare(p.size() - 5, 5, ".json") == 0;
  if (!is_index) {
    st.maps_.push_back(std::make_unique<Mapping>(p));
    st.files_.push_back(p);
    for (auto& t : parse_header(st.maps_[0]->data, st.maps_[0]->size, p, 0, &st.metadata_))
      st.tensors_.emplace(t.name, std::move(t));
    return st;
  }

  // Sharded: the index's weight_map is the authority on which shard holds what.
  json idx;
  try {
    idx = json::parse(read_text_file(p));
  } catch (const json::exception& e) {
    throw Error(p + ": not valid JSON (" + e.what() + ")");
  }
  if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
    throw Error(p + ": no weight_map object");
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shard_names;  // first-seen order, for a stable files() list
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw Error(p + ": weight_map entry '" + it.key() + "' is not a file name");
    std::string shard = it.value().get<std::string>();
    // Shards live beside the index; a path elsewhere is not a checkpoint we read.
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      throw Error(p + ": shard name '" + shard + "' is not a plain file name");
    if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) shard_names.push_back(shard);
    weight_map[it.key()] = shard;
  }
  std::map<std::string, std::map<std::string, TensorInfo>> per_shard;
  for (size_t i = 0; i < shard_names.size(); ++i) {
    const std::string sp = (path.parent_path() / shard_names[i]).string();
    st.maps_.push_back(std::make_unique<Mapping>(sp));
    st.files_.push_back(sp);
    auto& m = per_shard[shard_names[i]];
    for (auto& t : parse_header(st.maps_[i]->data, st.maps_[i]->size, sp, i, i == 0 ? &st.metadata_ : nullptr))
      m.emplace(t.name, std::move(t));
  }
  for (const auto& [name, shard] : weight_map) {
    auto& m = per_shard[shard];
    auto it = m.find(name);
    if (it == m.end()) throw Error(p + ": weight_map puts '" + name + "' in " + shard + ", which does not hold it");
    st.tensors_.emplace(name, it->second);
  }
  return st;
}

bool SafeTensors::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw Error("checkpoint " + (files_.empty() ? std::string("?") : files_[0]) + " has no tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

void st_convert_to_float(StDType t, const uint8_t* src, size_t count, float* dst) {
  switch (t) {
    case StDType::f32:
      std::memcpy(dst, src, count * 4);
      return;
    case StDType::f16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      return;
    case StDType::bf16:
      // bfloat16 is the top half of a float32: widening is exact.
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(dst + i, &bits, 4);
      }
      return;
    case StDType::f64:
      for (size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
    default:
      throw Error(std::string("cannot convert dtype ") + st_dtype_name(t) + " to float32");
  }
}

std::vector<float> SafeTensors::to_float(const std::string& name) const {
  const TensorInfo& t = info(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  try {
    st_convert_to_float(t.dtype, t.data, out.size(), out.data());
  } catch (const Error& e) {
    throw Error("tensor '" + name + "': " + e.what());
  }
  return out;
}

std::vector<float> SafeTensors::to_float(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorInfo& t = info(name);
  if (t.shape != shape) {
    TensorInfo want;
    want.shape = shape;
    throw Error("tensor '" + name + "' has shape " + t.shape_str() + ", the config implies " + want.shape_str());
  }
  return to_float(name);
}

}  // namespace vismem
