// Row-major single-precision GEMM through the Fortran BLAS symbol that torch's CPU library
// carries (MKL on x86-64 wheels, OpenBLAS on Arm): the same engine ATen's own attention uses.
#pragma once

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace zerotuning::cpu {

// C[m x n] = alpha * A[m x k] * B[n x k]^T + beta * C, all row-major with leading dimensions.
inline void gemm_a_bt(int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                      int ldb, float beta, float* c, int ldc) {
  // Row-major C is column-major C^T = B * A^T.
  sgemm_("T", "N", &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// C[m x n] = alpha * A[m x k] * B[k x n] + beta * C, all row-major with leading dimensions.
inline void gemm_a_b(int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                     int ldb, float beta, float* c, int ldc) {
  sgemm_("N", "N", &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// C[m x n] = alpha * A[k x m]^T * B[k x n] + beta * C, all row-major with leading dimensions.
inline void gemm_at_b(int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                      int ldb, float beta, float* c, int ldc) {
  sgemm_("N", "T", &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

}  // namespace zerotuning::cpu
