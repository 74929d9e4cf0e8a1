// gpu_search.h in a build without CUDA (the default; cmake -DVISMEM_CUDA=ON
// compiles gpu_search.cu instead): no device is ever available and using
// one is an error that says how to get it.
#include "error.h"
#include "gpu_search.h"

namespace vismem {

namespace {
const char* const kWhy = "this build has no CUDA path (configure with cmake -DVISMEM_CUDA=ON, nvcc needed)";
}

bool gpu_search_available(std::string* why) {
  if (why) *why = kWhy;
  return false;
}

struct GpuFlatSearch::Impl {};

GpuFlatSearch::GpuFlatSearch(const FlatRows&, int) { throw Error(std::string("GPU search: ") + kWhy); }
GpuFlatSearch::~GpuFlatSearch() = default;
void GpuFlatSearch::set_fused_max_batch(int) {}
int GpuFlatSearch::dim() const { return 0; }
int64_t GpuFlatSearch::rows() const { return 0; }
std::string GpuFlatSearch::device() const { return "none"; }
void GpuFlatSearch::search(int64_t, const float*, int, float*, int64_t*) const {
  throw Error(std::string("GPU search: ") + kWhy);
}

}  // namespace vismem
