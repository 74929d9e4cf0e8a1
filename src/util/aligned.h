// aligned.h: a std::allocator that aligns to 64 bytes (one cache line).
//
// Basic usage:
//   vismem::AlignedVector<float> v(n);  // v.data() % 64 == 0
//
// Why: glibc's malloc returns large blocks 16 bytes past a page boundary, so
// every other 32-byte load from such a buffer, and every 64-byte one, spans
// two cache lines (a split load takes a second load slot). The packed GEMM's
// panels and the int8 GEMM's blocks are read by every tile: the 4 x 24 AVX2
// tile on one L1-resident panel ran at a median 90 against 85-88 GFLOP/s
// offset (peaks 96-99 against 92-93; Zen 3). A whole ViT on Zen 3, whose
// panels stream from L2, was the same within noise (ViT-S 1.005x, ViT-B
// 1.008x, alternating). On AVX-512 each zmm load of an offset panel would split.
// Thread safety: stateless; as std::allocator.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace vismem {

template <class T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const noexcept { return false; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace vismem
