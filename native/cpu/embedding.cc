// Token embedding lookup (forward only: the embedding table is frozen).
#include <cstring>

#include "cpu/ops.h"

namespace claas::cpu {

void embedding(float* out_TH, const float* table_VH, const int32_t* ids_T, int T, int H) {
  for (int t = 0; t < T; ++t) {
    std::memcpy(out_TH + static_cast<size_t>(t) * H, table_VH + static_cast<size_t>(ids_T[t]) * H,
                sizeof(float) * H);
  }
}

}  // namespace claas::cpu
