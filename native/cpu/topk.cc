// Top-K per row (descending, ties to the lower index) with a partial selection, O(V log K).
#include <algorithm>
#include <vector>

#include "cpu/ops.h"

namespace claas::cpu {

void topk(int32_t* idx_RK, float* val_RK, const float* x_RV, int R, int V, int K) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const float* x = x_RV + static_cast<size_t>(r) * V;
    // Min-heap of the best K seen so far; "better" = larger value, then lower index.
    auto better = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
    std::vector<int32_t> heap;
    heap.reserve(K);
    for (int32_t v = 0; v < V; ++v) {
      if (static_cast<int>(heap.size()) < K) {
        heap.push_back(v);
        std::push_heap(heap.begin(), heap.end(), better);
      } else if (better(v, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back() = v;
        std::push_heap(heap.begin(), heap.end(), better);
      }
    }
    std::sort(heap.begin(), heap.end(), better);
    for (int k = 0; k < K; ++k) {
      idx_RK[static_cast<size_t>(r) * K + k] = heap[k];
      val_RK[static_cast<size_t>(r) * K + k] = x[heap[k]];
    }
  }
}

}  // namespace claas::cpu
