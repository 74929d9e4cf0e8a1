// safetensors.h: read-only, memory-mapped access to HF .safetensors checkpoints,
// single file or sharded (model.safetensors.index.json).
//
// Basic usage:
//   vismem::SafeTensors st = vismem::SafeTensors::open("/models/dinov2-small");  // folder, file or index
//   const vismem::TensorInfo& t = st.info("layernorm.weight");                   // dtype, shape, bytes
//   std::vector<float> w = st.to_float("layernorm.weight", {384});              // F32/F16/BF16 -> float32
//
// Everything in the header is validated when the file is opened (header length,
// JSON, dtypes, offsets in bounds and non-overlapping, byte sizes matching the
// shapes); a truncated or corrupt file throws vismem::Error naming the file,
// never reads out of bounds.
// Thread safety: read-only after open(); any number of threads may read at once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace vismem {

// safetensors dtypes. Only the float ones convert to float32; the others are
// validated (so a checkpoint holding an int64 buffer opens) but not converted.
enum class StDType { f64, f32, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

// "F32" -> StDType::f32; throws vismem::Error on an unknown name.
StDType parse_st_dtype(const std::string& name);
const char* st_dtype_name(StDType t);
size_t st_dtype_size(StDType t);

struct TensorInfo {
  std::string name;
  StDType dtype = StDType::f32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapped file; valid while the SafeTensors lives
  size_t nbytes = 0;
  size_t file = 0;  // index into SafeTensors::files()

  int64_t numel() const;
  std::string shape_str() const;  // "[64, 3, 14, 14]"
};

class SafeTensors {
 public:
  // path: a .safetensors file, a model.safetensors.index.json, or a folder holding
  // model.safetensors or model.safetensors.index.json.
  static SafeTensors open(const std::string& path);

  SafeTensors(SafeTensors&&) noexcept;
  SafeTensors& operator=(SafeTensors&&) noexcept;
  ~SafeTensors();

  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws if absent
  std::vector<std::string> names() const;                  // sorted
  const std::vector<std::string>& files() const { return files_; }  // the mapped files, in shard order
  // __metadata__ of the (first) file: string -> string.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor converted to float32 (F32 copied, F16/BF16 exact, F64 rounded).
  // Throws vismem::Error for other dtypes.
  std::vector<float> to_float(const std::string& name) const;
  // The same, after checking the shape is exactly `shape` (error names both).
  std::vector<float> to_float(const std::string& name, const std::vector<int64_t>& shape) const;

 private:
  struct Mapping;
  SafeTensors();
  std::vector<std::unique_ptr<Mapping>> maps_;
  std::vector<std::string> files_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Converts `count` elements of a raw little-endian buffer to float32.
void st_convert_to_float(StDType t, const uint8_t* src, size_t count, float* dst);

}  // namespace vismem
