// linalg.h: the single place vismem calls BLAS sgemm, plus BLAS thread control.
//
// Basic usage:
//   // C (m x n) = alpha * A (m x k) * op(B) + beta * C, all row-major float32
//   vismem::matmul(m, n, k, A, lda, B, ldb, C, ldc, /*b_transposed=*/true);
//
// Every encoder layer and the exact search go through matmul(), so one switch
// (threads, backend) affects them all.
// Thread safety: matmul() may be called from several threads at once; each
// call then runs BLAS single-threaded if blas_threads(1) was set.
#pragma once
#include <cstdint>
#include <string>

namespace vismem {

// Row-major C[m x n] = alpha * A[m x k] * B' + beta * C, where B' is B (k x n,
// b_transposed=false) or B^T (B stored n x k, b_transposed=true).
void matmul(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc, bool b_transposed, float alpha = 1.0f, float beta = 0.0f);

// The OpenBLAS kernel family in use ("Haswell", "Zen", "SkylakeX", ...;
// "Prescott" where it did not recognize the CPU: its SSE3 fallback).
std::string blas_core();
// Whether that family has AVX-512 kernels (SkylakeX, Cooperlake, SapphireRapids).
bool blas_core_has_avx512(const std::string& core);

// Number of threads BLAS itself uses inside one matmul call.
void set_blas_threads(int n);
int blas_threads();

// Threads vismem uses by default: VISMEM_THREADS or the number of cores.
int default_threads();

}  // namespace vismem
