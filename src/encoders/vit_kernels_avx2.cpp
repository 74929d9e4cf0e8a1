// The AVX2 + FMA level of vit_kernels.h (x86-64-v3), whatever the build's baseline.
#include "vit_kernels.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")  // vit_kernels_impl.h says why
#include "fastmath.h"
#pragma GCC target("avx2,fma,f16c")
#define VISMEM_KERNEL_NS kernels_avx2
#include "vit_kernels_impl.h"
#pragma GCC pop_options
#include "vit_kernels_table.h"
#undef VISMEM_KERNEL_NS
#endif
