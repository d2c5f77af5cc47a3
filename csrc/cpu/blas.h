// Row-major single-precision GEMM through the Fortran BLAS symbol that torch's CPU library
// carries (MKL on x86-64 wheels, OpenBLAS on Arm): the same engine ATen's own attention uses.
#pragma once

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);
// MKL's per-thread thread count (absent from OpenBLAS builds, hence weak).
extern "C" int MKL_Set_Num_Threads_Local(int nt) __attribute__((weak));  // the C entry (the lower-case symbol is the Fortran one, by pointer)

namespace zerotuning::cpu {

// Inside one of the kernel's worker threads: MKL's sgemm on that thread stays single-threaded.
// Otherwise MKL splits a call over threads of its own (nested in ATen's), and the split — hence
// the summation order — varied between calls, so identical inputs gave results differing in the
// last bit (and the nested threads oversubscribed the cores).
class SequentialBlas {
 public:
  SequentialBlas() : previous_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SequentialBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  }
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;

 private:
  int previous_;
};

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
