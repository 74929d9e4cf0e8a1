// The portable level of vit_kernels.h (the build's baseline flags) and the
// choice between levels.
#include "vit_kernels.h"

#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")  // vit_kernels_impl.h says why
#include "fastmath.h"
#define VISMEM_KERNEL_NS kernels_portable
#include "vit_kernels_impl.h"
#include "vit_kernels_table.h"
#undef VISMEM_KERNEL_NS
#pragma GCC pop_options

namespace vismem {

#if defined(__x86_64__)
namespace kernels_avx2 {
VitKernels table(Isa isa);
}
namespace kernels_avx512 {
VitKernels table(Isa isa);
}
#endif

const VitKernels& vit_kernels(Isa isa) {
#if defined(__x86_64__)
  // Never above what the hardware runs, whatever the caller asks.
  const Isa level = isa < cpu_max_isa() ? isa : cpu_max_isa();
  if (level == Isa::avx512) {
    static const VitKernels avx512 = kernels_avx512::table(Isa::avx512);
    return avx512;
  }
  if (level == Isa::avx2) {
    static const VitKernels avx2 = kernels_avx2::table(Isa::avx2);
    return avx2;
  }
#endif
  static const VitKernels portable = kernels_portable::table(Isa::portable);
  return portable;
}

}  // namespace vismem
