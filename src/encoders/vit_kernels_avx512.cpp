// The AVX-512 level of vit_kernels.h (x86-64-v4, 512-bit vectors: GCC prefers
// 256 bits by default even where AVX-512 is enabled).
#include "vit_kernels.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")  // vit_kernels_impl.h says why
#include "fastmath.h"
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,prefer-vector-width=512")
#define VISMEM_KERNEL_NS kernels_avx512
#include "vit_kernels_impl.h"
#pragma GCC pop_options
#include "vit_kernels_table.h"
#undef VISMEM_KERNEL_NS
#endif
