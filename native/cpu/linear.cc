// Frozen base projection y = x W^T + b through OpenBLAS, and its input gradient dx = dy W.
#include <cblas.h>

#include <cstring>

#include "cpu/ops.h"

namespace claas::cpu {

void linear(float* y_TO, const float* x_TI, const float* W_OI, const float* b_O, int T, int I, int O) {
  if (b_O) {
    for (int t = 0; t < T; ++t) std::memcpy(y_TO + static_cast<size_t>(t) * O, b_O, sizeof(float) * O);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, O, I, 1.0f, x_TI, I, W_OI, I, b_O ? 1.0f : 0.0f, y_TO,
              O);
}

void linear_backward_input(float* dx_TI, const float* dy_TO, const float* W_OI, int T, int I, int O,
                           bool accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, I, O, 1.0f, dy_TO, O, W_OI, I,
              accumulate ? 1.0f : 0.0f, dx_TI, I);
}

}  // namespace claas::cpu
